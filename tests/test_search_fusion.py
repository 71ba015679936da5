"""Fusion, tie-breaking, run files and index-folder errors of dupmae_ir.search (seconds; no model).

The reference for ``sum``/``normalized`` fusion is Pyserini's own ``HybridSearcher._hybrid_results``.
"""
from __future__ import annotations

import json
import random

import pytest

from dupmae_ir.index import load_index
from dupmae_ir.runs import FusionConfig, fuse, rank_hits, read_trec, write_trec


def _lists(seed: int, n: int = 60):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(n)]
    dense = sorted(((d, rng.uniform(-2, 30)) for d in rng.sample(docs, 40)), key=lambda h: -h[1])
    sparse = sorted(((d, float(rng.randint(0, 900_000))) for d in rng.sample(docs, 35)), key=lambda h: -h[1])
    return dense, sparse


@pytest.fixture(scope="module")
def pyserini_fuse():
    from dupmae_ir.java import start_jvm

    start_jvm()
    from pyserini.search.faiss import DenseSearchResult
    from pyserini.search.hybrid import HybridSearcher

    def ref(dense, sparse, alpha, k, normalization, weight_on_dense):
        hits = HybridSearcher._hybrid_results([DenseSearchResult(d, s) for d, s in dense],
                                              [DenseSearchResult(d, s) for d, s in sparse],
                                              alpha, k, normalization, weight_on_dense)
        return {h.docid: h.score for h in hits}

    return ref


@pytest.mark.parametrize("fusion,alpha,weight_on_dense", [
    ("sum", 1e-4, False), ("sum", 0.5, True), ("normalized", 1.0, False), ("normalized", 0.3, True)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuse_equals_pyserini_hybrid(pyserini_fuse, fusion, alpha, weight_on_dense, seed):
    dense, sparse = _lists(seed)
    k = 50  # all of the union: compare the full score table
    ours = fuse(dense, sparse, k, fusion, alpha, weight_on_dense)
    ref = pyserini_fuse(dense, sparse, alpha, k, fusion == "normalized", weight_on_dense)
    assert set(d for d, _ in ours) == set(ref)
    for docid, score in ours:
        assert score == pytest.approx(ref[docid], rel=1e-12, abs=1e-12)


def test_sum_is_dense_plus_dequantised_sparse():
    dense = [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    sparse = [("b", 40_000.0), ("a", 20_000.0), ("c", 10_000.0)]
    hits = dict(fuse(dense, sparse, 10, "sum", alpha=1 / (100 * 100)))
    assert hits == pytest.approx({"a": 5.0, "b": 6.0, "c": 2.0})


def test_missing_side_gets_that_sides_minimum():
    hits = dict(fuse([("a", 5.0), ("b", 1.0)], [("c", 300.0), ("a", 100.0)], 10, "sum", alpha=0.01))
    assert hits["b"] == pytest.approx(1.0 + 0.01 * 100.0)  # sparse filled with its min
    assert hits["c"] == pytest.approx(1.0 + 0.01 * 300.0)  # dense filled with its min


def test_ties_break_by_docid_ascending():
    assert rank_hits({"z": 1.0, "b": 2.0, "a": 1.0, "c": 2.0}) == [("b", 2.0), ("c", 2.0), ("a", 1.0), ("z", 1.0)]
    tied = fuse([("x", 1.0), ("y", 1.0), ("w", 1.0)], [], 3, "sum", alpha=1.0)
    assert [d for d, _ in tied] == ["w", "x", "y"]


def test_rrf():
    hits = fuse([("a", 9.0), ("b", 8.0)], [("b", 5.0), ("c", 4.0)], 10, "rrf", rrf_k=60)
    assert dict(hits) == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})
    assert [d for d, _ in hits] == ["b", "a", "c"]


def test_fusion_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="valid"):
        FusionConfig(fusion="max")
    with pytest.raises(ValueError, match="valid"):
        fuse([], [], 10, "linear")


def test_trec_round_trip_with_provenance(tmp_path):
    run = {"q1": [("d1", 2.5), ("d2", 1.25)], "q2": [("d3", -0.5)]}
    path = write_trec(tmp_path / "runs" / "x.trec", run, "tag", {"mode": "hybrid"})
    assert path.read_text().splitlines()[0] == "q1 Q0 d1 1 2.500000 tag"
    assert read_trec(path) == run
    prov = json.loads((tmp_path / "runs" / "x.trec.json").read_text())
    assert prov["mode"] == "hybrid" and prov["queries"] == 2 and "dupmae_ir_version" in prov


def test_load_index_errors_name_the_fix(tmp_path):
    from dupmae_ir.errors import IndexFormatError

    with pytest.raises(IndexFormatError, match="dupmae_ir.encode"):
        load_index(tmp_path)
    (tmp_path / "dupmae_index.json").write_text(json.dumps({"doc_scale": 100, "query_scale": 50}))
    with pytest.raises(IndexFormatError, match="FAISS index missing"):
        load_index(tmp_path)
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / "index").write_text("")
    (tmp_path / "dense" / "docid").write_text("")
    (tmp_path / "impact").mkdir()
    with pytest.raises(IndexFormatError, match="not a readable FAISS index"):
        load_index(tmp_path)
    info = load_index(tmp_path, check=False)  # the layout alone
    assert info.alpha == pytest.approx(1 / 5000)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuse_normalize_equals_pyserini_fusion(tmp_path, seed):
    """``fuse_normalize`` ranks as stock ``pyserini.fusion.normalize`` on the same runs, ties and a
    constant-score list included."""
    from pyserini.fusion import normalize
    from pyserini.trectools import TrecRun

    from dupmae_ir.runs import fuse_normalize

    a, b = _lists(seed)
    b = [(d, round(s / 1000)) for d, s in b]  # coarse scores: ties inside a list and across the fusion
    c = [("d1", 5.0), ("d2", 5.0)]  # constant list
    runs = [{"q1": a, "q2": c}, {"q1": b, "q2": a[:10]}]
    paths = [write_trec(tmp_path / f"r{i}.trec", {q: rank_hits(dict(h)) for q, h in r.items()}, "t")
             for i, r in enumerate(runs)]
    stock = normalize([TrecRun(str(p)) for p in paths], depth=30, k=25)
    for q in ("q1", "q2"):
        theirs = stock.run_data[stock.run_data.topic == q]
        ours = fuse_normalize([rank_hits(dict(r[q])) for r in runs], 25, depth=30)
        assert [d for d, _ in ours] == list(theirs.docid)
        assert [s for _, s in ours] == pytest.approx(list(theirs.score), abs=1e-5)
