"""``python -m dupmae_ir.eval beir --faiss TYPE``: eval builds the asked FAISS type through encode, keeps a
non-flat type's indexes, runs and reports in folders of their own, records the type, its build
parameters and the search knob in each result (``depends_on``, ``dense_index``, ``dense_search``), and
never reuses a result or an index of another type (a 120-document SciFact slice, a tiny checkpoint)."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import write_beir_slice

HNSW = ["--faiss", "hnsw", "--hnsw-m", "8", "--ef-construction", "16"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, scifact_dir, tiny_checkpoint):
    root = tmp_path_factory.mktemp("eval_types")
    write_beir_slice(scifact_dir, root / "beir" / "scifact", docs=120, queries=8)
    return root, tiny_checkpoint


def _eval(root, ckpt, *extra) -> int:
    from dupmae_ir.errors import run_command
    from dupmae_ir.eval.__main__ import main

    return run_command(main, ["beir", "--datasets", "scifact", "--data-dir", str(root / "beir"), "--encoder",
                              str(ckpt), "--index-root", str(root / "indexes"), "--runs", str(root / "runs"),
                              "--output", str(root / "eval"), "--mode", "dense", "--no-bm25", "--hits", "20",
                              "--threads", "1", *extra])


def _tag(ckpt) -> str:
    from dupmae_ir.eval.suites import encoder_tag
    from dupmae_ir.fingerprint import checkpoint_fingerprint

    return encoder_tag(str(ckpt), checkpoint_fingerprint(ckpt))


def _result(root, tag) -> dict:
    return json.loads((root / "eval" / "beir" / tag / "results" / "scifact.json").read_text())


@pytest.mark.slow  # eval end to end three times (flat, then HNSW built and searched twice): a pipeline test
def test_eval_builds_records_and_never_reuses_another_type(setup, capsys):
    root, ckpt = setup
    flat_tag, hnsw_tag = _tag(ckpt), f"{_tag(ckpt)}-hnsw-m8-efc16"
    assert _eval(root, ckpt) == 0
    flat = _result(root, flat_tag)
    assert flat["depends_on"]["dense_index"] == {"faiss": "flat", "params": {}}
    assert flat["dense_index"]["faiss"] == "flat" and flat["dense_search"] == {"faiss": "flat"}

    # an index of another type where the HNSW one belongs is refused, in one line, before any search
    hnsw_index = root / "indexes" / hnsw_tag / "scifact"
    shutil.copytree(root / "indexes" / flat_tag / "scifact", hnsw_index)
    capsys.readouterr()
    assert _eval(root, ckpt, *HNSW) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("error: ") and err.endswith("holds a FAISS index of type 'flat', not 'hnsw' (fix: pass "
                                                      "the --faiss flags it was built with, or remove this index "
                                                      "folder to build it again)")
    shutil.rmtree(hnsw_index)

    # the flat result put where the HNSW one goes is computed again, not reused
    hnsw_result = root / "eval" / "beir" / hnsw_tag / "results" / "scifact.json"
    hnsw_result.parent.mkdir(parents=True)
    shutil.copy(root / "eval" / "beir" / flat_tag / "results" / "scifact.json", hnsw_result)
    assert _eval(root, ckpt, *HNSW, "--ef-search", "5") == 0
    hnsw = _result(root, hnsw_tag)
    assert "scifact: computed again: dense_index" in capsys.readouterr().out
    assert hnsw["depends_on"]["dense_index"] == {"faiss": "hnsw",
                                                 "params": {"hnsw_m": 8, "ef_construction": 16, "ef_search": 128}}
    assert hnsw["depends_on"]["dense_search"] == hnsw["dense_search"] == {"faiss": "hnsw", "ef_search": 5}
    assert hnsw["dense_index"]["faiss"] == "hnsw" and hnsw["dense_index"]["params"]["hnsw_m"] == 8
    built = json.loads((hnsw_index / "dupmae_index.json").read_text())["dense"]
    assert built["faiss_class"] == "IndexHNSWFlat" and built["params"]["ef_construction"] == 16
    run_meta = json.loads((root / "runs" / "beir" / hnsw_tag / "scifact.dense.trec.json").read_text())
    assert json.dumps({"faiss": "hnsw", "ef_search": 5}) in json.dumps(run_meta)
    assert _result(root, flat_tag) == flat  # the flat report is left alone

    # the same settings reuse it; another knob computes it again
    capsys.readouterr()
    assert _eval(root, ckpt, *HNSW, "--ef-search", "5") == 0 and _result(root, hnsw_tag) == hnsw
    assert _eval(root, ckpt, *HNSW, "--ef-search", "64") == 0
    assert "computed again: dense_search" in capsys.readouterr().out
    assert _result(root, hnsw_tag)["dense_search"] == {"faiss": "hnsw", "ef_search": 64}


def test_knob_of_another_type_fails_before_encoding(setup, capsys):
    root, ckpt = setup
    capsys.readouterr()
    assert _eval(root, ckpt, "--faiss", "flat-int8", "--ef-search", "5", "--index-root", str(root / "none")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --ef-search: applies to HNSW indexes") and "'flat-int8'" in err
    assert not (root / "none").exists()  # nothing was encoded
