"""The README's Python quick start runs as written, on a tiny checkpoint and a SciFact slice instead of
the default backbone and the whole bundled SciFact (the one line that names them is swapped)."""
from __future__ import annotations

import re

from conftest import ROOT, write_corpus_slice

SETTINGS = 'corpus, encoder = "default", "default"'


def quick_start() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert len(blocks) == 1, "the README has one Python block, the quick start"
    return blocks[0]


def test_readme_python_quick_start_runs(tiny_checkpoint, scifact_dir, tmp_path, monkeypatch, capsys):
    code = quick_start()
    assert len(code.strip().splitlines()) <= 10 and code.count(SETTINGS) == 1
    corpus = write_corpus_slice(scifact_dir, tmp_path / "corpus.jsonl", 40)
    monkeypatch.chdir(tmp_path)  # the block writes indexes/quickstart under the current folder
    namespace: dict = {}
    exec(compile(code.replace(SETTINGS, f"corpus, encoder = {str(corpus)!r}, {str(tiny_checkpoint)!r}"),
                 "README.md", "exec"), namespace)
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    ids = set(re.findall(r'"_id": "([^"]+)"', corpus.read_text()))
    assert len(printed) == 5 and all(docid in ids for docid, _ in printed)
    scores = [float(score) for _, score in printed]
    assert scores == sorted(scores, reverse=True)  # best first
    assert (tmp_path / "indexes" / "quickstart" / "dupmae_index.json").is_file()
    assert list(namespace["run"]) == ["q1"] and 0 < len(namespace["run"]["q1"]) <= 40
