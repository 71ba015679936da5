"""Acceptance, end to end on full SciFact (the shared ``scifact_index`` fixture: 5,183 docs encoded
with the default backbone): the three hybrid routes give the same run, and a hybrid hit's score is
its dense score plus its de-quantised sparse score.

Routes: (a) stock ``python -m pyserini.search.hybrid`` (run through ``python -m dupmae_ir.pyserini``
for Java 21) with queries pre-encoded by ``dupmae_ir.encode.encode_queries`` and no patching;
(b) ``python -m dupmae_ir.hybrid`` (stock CLI + live DupMAE query encoders); (c) ``dupmae_ir.search``.
All use DupMAE's fusion: ``fusion --alpha 1/(s_q*s_d)``, no normalisation, ``--min-idf -1``.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dupmae_ir.search import DupMAESearcher, load_index, read_trec

pytestmark = pytest.mark.slow
HITS = 1000  # per side and in the run
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd):
    env = {**os.environ, "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def routes(scifact_index, scifact_dir, tmp_path_factory):
    from dupmae_ir.data import resolve
    from dupmae_ir.encode import encode_queries

    tmp = tmp_path_factory.mktemp("e2e")
    info = load_index(scifact_index)
    queries = resolve(scifact_dir).queries("test")
    encoded = encode_queries(queries, info.encoder, tmp / "queries")
    fusion = ["fusion", "--alpha", repr(info.alpha), "--hits", str(HITS)]
    run = ["run", "--topics", str(encoded / "topics.tsv"), "--hits", str(HITS), "--batch-size", "64", "--threads", "2"]
    _run(["dupmae_ir.pyserini", "search.hybrid",
          "dense", "--index", str(info.dense), "--encoded-queries", str(encoded / "dense"),
          "sparse", "--index", str(info.impact), "--impact", "--encoder", str(encoded / "impact.jsonl"), "--min-idf", "-1",
          *fusion, *run, "--output", str(tmp / "a.trec")])
    _run(["dupmae_ir.hybrid",
          "dense", "--index", str(info.dense), "--encoder", info.encoder, "--encoder-class", "dupmae",
          "sparse", "--index", str(info.impact), "--impact", "--encoder", f"dupmae:{info.encoder}", "--min-idf", "-1",
          *fusion, *run, "--output", str(tmp / "b.trec")])
    searcher = DupMAESearcher(scifact_index, threads=2)
    ours = searcher.search_all(queries, hits=HITS, progress=False)
    return dict(a=read_trec(tmp / "a.trec"), b=read_trec(tmp / "b.trec"), ours=ours, queries=queries, info=info)


def _same_run(x, y, tol):
    """Same queries; per query the same documents with the same scores (relative ``tol``, float32
    in Pyserini's fusion) and the same order up to near-ties; the last hits may differ only by near-ties."""
    assert set(x) == set(y)
    for q in x:
        sx, sy = dict(x[q]), dict(y[q])
        common = sx.keys() & sy.keys()
        assert len(common) >= 0.99 * min(len(sx), len(sy)), q
        for d in common:
            assert sx[d] == pytest.approx(sy[d], rel=tol, abs=tol), (q, d)
        for (dx, vx), (dy, vy) in zip(x[q][:100], y[q][:100]):
            assert dx == dy or vx == pytest.approx(vy, rel=tol, abs=tol), (q, dx, dy)


def test_stock_pre_encoded_route_equals_toolkit(routes):
    _same_run(routes["a"], routes["ours"]["hybrid"], tol=1e-5)


def test_launcher_live_route_equals_toolkit(routes):
    _same_run(routes["b"], routes["ours"]["hybrid"], tol=1e-5)


def test_hybrid_score_is_dense_plus_dequantised_sparse(routes):
    ours, alpha = routes["ours"], routes["info"].alpha
    checked = 0
    for q, hits in ours["hybrid"].items():
        dense, sparse = dict(ours["dense"][q]), dict(ours["impact"][q])
        for docid, score in hits:
            if docid in dense and docid in sparse:
                assert score == pytest.approx(dense[docid] + alpha * sparse[docid], rel=1e-9)
                checked += 1
    assert checked > 0.5 * sum(len(h) for h in ours["hybrid"].values())
    # and the stock route's score for the same hits (float32 arithmetic there)
    stock = routes["a"]
    for q in list(stock)[:50]:
        dense, sparse = dict(ours["dense"][q]), dict(ours["impact"][q])
        for docid, score in stock[q][:20]:
            if docid in dense and docid in sparse:
                assert score == pytest.approx(dense[docid] + alpha * sparse[docid], rel=1e-5, abs=1e-5)


def test_effectiveness_is_recorded(routes, scifact_dir):
    """Scores of the default backbone (no DupMAE training) on SciFact test: printed for the report;
    only sanity-checked (the untrained MiniLM CLS is weak: ~0.5 dense per PERFORMANCE.md)."""
    from dupmae_ir.data import resolve
    from dupmae_ir.eval import score_run

    qrels = resolve(scifact_dir).qrels("test")
    for mode, run in routes["ours"].items():
        scores = score_run(run, qrels, ("nDCG@10", "R@100"))
        print(f"default backbone, SciFact test, {mode}: {scores}")
        assert scores["nDCG@10"] > 0.05
