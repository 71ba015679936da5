"""Acceptance, end to end on full SciFact (the shared ``scifact_index`` fixture: 5,183 docs encoded
with the default backbone): the three hybrid routes give the same run, and a hybrid hit's score is
its dense score plus its de-quantised sparse score.

Routes: (a) stock ``python -m pyserini.search.hybrid`` (run through ``python -m dupmae_ir.pyserini_run``
for Java 21) with queries pre-encoded by ``dupmae_ir.encode.encode_queries`` and no patching;
(b) ``python -m dupmae_ir.pyserini_hybrid`` (stock CLI + live DupMAE query encoders); (c) ``dupmae_ir.search``,
once on the same pre-encoded queries as (a) and once encoding live. All use DupMAE's fusion:
``fusion --alpha 1/(s_q*s_d)``, no normalisation, ``--min-idf -1``.

Stock Lucene takes at most 1024 query terms (no patching in route (a)), while a DupMAE query without
``query_topk`` keeps every positive vocabulary weight (~30k terms with the default backbone): route (a)
therefore uses queries cut to their top 1024 weights, searched by the toolkit through a view of the same
index recording ``query_topk=1024``.

(a) and (c) read identical query representations, so they must agree to float32 rounding (Pyserini
fuses in float32). Live encoding differs from batch to batch by float noise, which moves a few integer
query weights by 1 and can swap two near-equal weights at the top-1024 cut (measured: one SciFact
query in 300 on an AVX-512 host, 'zones' for 'retail' at weight 349, +2% on a document holding one of
them). Pyserini's impact side encodes one query at a time, so live (c) does too (``batch_size=1``),
and (b) is compared with it with a tolerance for the dense side's batch noise.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dupmae_ir.index import load_encoded_queries, load_index
from dupmae_ir.runs import read_trec
from dupmae_ir.search import DupMAESearcher

pytestmark = pytest.mark.slow
HITS = 1000  # per side and in the run
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd):
    env = {**os.environ, "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"


STOCK_QUERY_TOPK = 1024  # Lucene's BooleanQuery limit: stock Pyserini (no patching) takes <= 1024 terms


def _index_view(index, out, **overrides):
    """The same dense/ and impact/ files with ``dupmae_index.json`` fields overridden (query-side
    settings only: the documents do not depend on them)."""
    import json

    out.mkdir()
    for sub in ("dense", "impact"):
        (out / sub).symlink_to((index / sub).resolve())
    meta = json.loads((index / "dupmae_index.json").read_text())
    meta.update(overrides)
    if isinstance(meta.get("retriever"), dict):
        meta["retriever"].update(overrides)
    (out / "dupmae_index.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def routes(scifact_index, scifact_dir, tmp_path_factory):
    from dupmae_ir.data import resolve
    from dupmae_ir.encode import encode_queries

    tmp = tmp_path_factory.mktemp("e2e")
    info = load_index(scifact_index)
    queries = resolve(scifact_dir).queries("test")
    fusion = ["fusion", "--alpha", repr(info.alpha), "--hits", str(HITS)]

    # (a) stock Pyserini, pre-encoded queries, no patching. Without query_topk a DupMAE query keeps
    # every positive vocabulary weight (~30k terms with the default backbone): beyond Lucene's limit,
    # so the queries are cut to their top 1024 weights, and the toolkit searches a view of the same
    # index that records query_topk=1024, from the same pre-encoded files.
    view = _index_view(scifact_index, tmp / "view", query_topk=STOCK_QUERY_TOPK)
    pre_searcher = DupMAESearcher(view, threads=2)
    encoded = encode_queries(queries, pre_searcher.encoder, tmp / "queries")
    _run(["dupmae_ir.pyserini_run", "search.hybrid",
          "dense", "--index", str(info.dense), "--encoded-queries", str(encoded / "dense"),
          "sparse", "--index", str(info.impact), "--impact", "--encoder", str(encoded / "impact.jsonl"),
          "--min-idf", "-1",
          *fusion, "run", "--topics", str(encoded / "topics.tsv"), "--hits", str(HITS), "--batch-size", "64",
          "--threads", "2", "--output", str(tmp / "a.trec")])
    pre_searcher.encoded = load_encoded_queries(encoded)
    pre = pre_searcher.search_all(queries, hits=HITS, progress=False)

    # (b) the launcher: stock CLI with live DupMAE query encoding, the index's own settings
    _run(["dupmae_ir.pyserini_hybrid",
          "dense", "--index", str(info.dense), "--encoder", info.encoder, "--encoder-class", "dupmae",
          "sparse", "--index", str(info.impact), "--impact", "--encoder", f"dupmae:{info.encoder}", "--min-idf", "-1",
          *fusion, "run", "--topics", str(encoded / "topics.tsv"), "--hits", str(HITS), "--batch-size", "64",
          "--threads", "2", "--output", str(tmp / "b.trec")])
    # one query per batch, as Pyserini's impact side encodes them (see the module doc)
    live = DupMAESearcher(scifact_index, threads=2).search_all(queries, hits=HITS, progress=False, batch_size=1)
    return dict(a=read_trec(tmp / "a.trec"), b=read_trec(tmp / "b.trec"), ours=pre, live=live, info=info)


def _same_run(x, y, tol, min_common=0.99):
    """Same queries; per query the same documents (but for near-ties at the cut-off) with the same
    scores (relative ``tol``) in the same order up to near-ties."""
    assert set(x) == set(y)
    for q in x:
        sx, sy = dict(x[q]), dict(y[q])
        common = sx.keys() & sy.keys()
        assert len(common) >= min_common * min(len(sx), len(sy)), q
        for d in common:
            assert sx[d] == pytest.approx(sy[d], rel=tol, abs=tol), (q, d)
        for (dx, vx), (dy, vy) in zip(x[q][:100], y[q][:100]):
            assert dx == dy or vx == pytest.approx(vy, rel=tol, abs=tol), (q, dx, dy)


def test_stock_pre_encoded_route_equals_toolkit(routes):
    _same_run(routes["a"], routes["ours"]["hybrid"], tol=1e-6)


def test_launcher_live_route_equals_toolkit(routes):
    _same_run(routes["b"], routes["live"]["hybrid"], tol=1e-3, min_common=0.95)


def test_hybrid_score_is_dense_plus_dequantised_sparse(routes):
    ours, alpha = routes["ours"], routes["info"].alpha
    checked = 0
    for q, hits in ours["hybrid"].items():
        dense, sparse = dict(ours["dense"][q]), dict(ours["impact"][q])
        checked_q = 0
        for docid, score in hits:
            if docid in dense and docid in sparse:
                assert score == pytest.approx(dense[docid] + alpha * sparse[docid], rel=1e-9)
                checked_q += 1
        assert checked_q > 0, q  # every query's list holds documents found by both sides
        checked += checked_q
    # the rest were found by one side only (Pyserini's rule gives them the other side's lowest score);
    # with the untrained default backbone about a third of the fused hits are found by both sides
    assert checked > 0.2 * sum(len(h) for h in ours["hybrid"].values())
    # and the stock route's score for the same hits (float32 arithmetic there)
    stock = routes["a"]
    for q in list(stock)[:50]:
        dense, sparse = dict(ours["dense"][q]), dict(ours["impact"][q])
        for docid, score in stock[q][:20]:
            if docid in dense and docid in sparse:
                assert score == pytest.approx(dense[docid] + alpha * sparse[docid], rel=1e-5, abs=1e-5)


# nDCG@10 of the default backbone (no DupMAE training) on SciFact test through this index, as measured
# by this test (eval/encoding-and-search-speed.md, "Default backbone"); the tolerance covers CPU float
# noise and bf16 vs fp32 query encoding, while a broken encoder, head or fusion moves them by far more
PINNED_NDCG10 = {"dense": 0.5125, "impact": 0.4913, "hybrid": 0.4929}
PINNED_TOLERANCE = 0.01


def test_effectiveness_is_recorded(routes, scifact_dir):
    """The default backbone's nDCG@10 on SciFact test in each mode, pinned regression-style."""
    from dupmae_ir.data import resolve
    from dupmae_ir.runs import score_run

    qrels = resolve(scifact_dir).qrels("test")
    got = {mode: score_run(run, qrels, ("nDCG@10",)).values["nDCG@10"] for mode, run in routes["live"].items()}
    assert got.keys() == PINNED_NDCG10.keys()
    assert got == pytest.approx(PINNED_NDCG10, abs=PINNED_TOLERANCE), f"measured {got}"
