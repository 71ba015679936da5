"""`import dupmae_ir` stays cheap: the package, the data layer and the Java/launcher modules import
none of torch, transformers, faiss, Pyserini, the JVM bridge or ir_datasets (checked in a fresh
interpreter; timing lives in bench/, not here)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "faiss", "pyserini", "jnius", "jnius_config", "ir_datasets", "ir_measures",
         "numpy", "tokenizers", "safetensors")


@pytest.mark.parametrize("module", ["dupmae_ir", "dupmae_ir.data", "dupmae_ir.java", "dupmae_ir.pyserini_run",
                                    "dupmae_ir.api"])
def test_import_is_cheap(module):
    code = (f"import sys, json; import {module}; "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [], f"`import {module}` pulled in heavy modules"


def test_version():
    import dupmae_ir

    assert isinstance(dupmae_ir.__version__, str) and dupmae_ir.__version__.count(".") == 2


def test_front_door_is_imported_on_first_use():
    code = ("import sys, dupmae_ir; before = 'dupmae_ir.api' in sys.modules; "
            "from dupmae_ir import Indexer, Searcher; import dupmae_ir.api as api; "
            "print(before, Indexer is api.Indexer and Searcher is api.Searcher)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
