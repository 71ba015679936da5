"""ir_datasets ids resolved through ir_datasets, on local files only (no network).

ir_datasets' BEIR loader (``ir_datasets/datasets/beir.py`` + ``etc/downloads.json``) reads
``$IR_DATASETS_HOME/beir/<name>/source.zip`` (members ``<name>/corpus.jsonl``, ``<name>/queries.jsonl``,
``<name>/qrels/<split>.tsv``). A file already at that cache path is used as is: its md5 is checked
only when ir_datasets downloads it. So the shared SciFact files, zipped in that layout, serve
``beir/scifact`` offline. ``IR_DATASETS_HOME`` is read when ir_datasets is imported, so each check runs
in a fresh interpreter, with every proxy pointing at a closed port so that any download fails fast.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "IR_DATASETS_DL_TRIES": "1", "IR_DATASETS_DL_DISABLE_PBAR": "true"}


def run_py(code: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE, "IR_DATASETS_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def irds_home(scifact_dir, tmp_path_factory) -> Path:
    """An IR_DATASETS_HOME holding beir/scifact/source.zip built from the shared SciFact files."""
    home = tmp_path_factory.mktemp("irds")
    zpath = home / "beir" / "scifact" / "source.zip"
    zpath.parent.mkdir(parents=True)
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with gzip.open(scifact_dir / "corpus.jsonl.gz", "rb") as f:
            zf.writestr("scifact/corpus.jsonl", f.read())
        zf.write(scifact_dir / "queries.jsonl", "scifact/queries.jsonl")
        for split in ("train", "test"):
            zf.write(scifact_dir / "qrels" / f"{split}.tsv", f"scifact/qrels/{split}.tsv")
    return home


def test_beir_scifact_through_ir_datasets(irds_home, scifact_dir):
    code = """
import json
from dupmae_ir.data import CorpusStats, resolve, doc_text
coll = resolve("beir/scifact")
assert coll.kind == "ir_datasets", coll
stats = CorpusStats()
docs = list(coll.iter_docs(stats=stats))
test = resolve("beir/scifact/test")
out = {
    "docs": len(docs), "stats_docs": stats.docs, "first": [docs[0].id, docs[0].title[:40], docs[0].text[:40]],
    "test_queries": len(test.queries()), "test_qrels": sum(map(len, test.qrels().values())),
    "default_split_queries": len(coll.queries()), "train_queries": len(coll.queries("train")),
    "train_qrels": sum(map(len, coll.qrels("train").values())),
    "q1": test.queries()["1"],
}
print("RESULT " + json.dumps(out))
"""
    out = run_py(code, irds_home)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Download failed" not in out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    assert res["docs"] == res["stats_docs"] == 5183
    assert (res["test_queries"], res["test_qrels"]) == (300, 339)
    assert res["default_split_queries"] == 300
    assert (res["train_queries"], res["train_qrels"]) == (809, 919)
    # the same documents and queries as the local folder
    from dupmae_ir.data import resolve
    local = resolve(scifact_dir)
    first = next(iter(local.iter_docs()))
    assert res["first"] == [first.id, first.title[:40], first.text[:40]]
    assert res["q1"] == local.queries("test")["1"]


def test_offline_download_failure_is_a_clear_data_error(tmp_path):
    code = """
from dupmae_ir.data import DataError, resolve
coll = resolve("beir/fiqa")
for what, call in (("queries", coll.queries), ("qrels", coll.qrels), ("documents", lambda: next(coll.iter_docs()))):
    try:
        call()
    except DataError as e:
        print("ERR", what, str(e).replace("\\n", " "))
    else:
        raise SystemExit(what + " did not fail")
"""
    out = run_py(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    errs = [ln for ln in out.stdout.splitlines() if ln.startswith("ERR ")]
    assert [e.split()[1] for e in errs] == ["queries", "qrels", "documents"]
    for e in errs:
        assert "beir/fiqa" in e and "download failed" in e and "IR_DATASETS_HOME" in e and str(tmp_path) in e
        assert "source.zip" in e and "local BEIR folder" in e
