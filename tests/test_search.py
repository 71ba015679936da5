"""dupmae_ir.search on a real SciFact slice (300 docs) encoded by a tiny random DupMAE checkpoint:
dense scores equal brute-force inner products, impact scores equal exact integer dot products, the
hybrid score is dense + de-quantised sparse, and the CLI writes runs with provenance (~1 minute).

The slice index is built here in the layout of ``dupmae_ir.encode`` (FAISS ``dense/``, Lucene
``impact/``, ``dupmae_index.json``) so that these checks do not depend on the encoder's own code.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import QUERY_TOPK, build_reference_index  # noqa: F401 (test_eval and test_search_launcher use it)


@pytest.fixture(scope="module")
def slice_index(reference_slice_index, scifact_dir):
    from dupmae_ir.data import resolve

    out, impacts, _ = reference_slice_index
    queries = dict(list(resolve(scifact_dir).queries("test").items())[:24])
    return out, impacts, queries


@pytest.fixture(scope="module")
def searcher(slice_index):
    from dupmae_ir.search import DupMAESearcher

    return DupMAESearcher(slice_index[0], threads=2)


def test_searcher_uses_the_index_config(searcher):
    assert searcher.encoder.config.query_topk == QUERY_TOPK
    assert searcher.alpha == pytest.approx(1 / (100.0 * 100.0))


def test_dense_impact_hybrid_scores_are_exact(searcher, slice_index):
    import faiss

    index_dir, doc_impacts, queries = slice_index
    qids, texts = list(queries), list(queries.values())
    runs = searcher.search_batch(qids, texts, hits=300)  # the whole slice: both sides overlap
    enc = searcher.encoder.encode_queries(texts)
    index = faiss.read_index(str(index_dir / "dense" / "index"))
    docids = (index_dir / "dense" / "docid").read_text().split()
    matrix = index.reconstruct_n(0, index.ntotal)  # (N, d)
    for i, q in enumerate(qids):
        # dense: brute-force inner products
        exact = matrix @ enc.dense[i]  # (N,)
        for docid, score in runs["dense"][q]:
            assert score == pytest.approx(float(exact[docids.index(docid)]), rel=1e-5, abs=1e-4)
        assert runs["dense"][q][0][1] == pytest.approx(float(exact.max()), rel=1e-5)
        # impact: exact integer dot product of query and document impacts
        qimp = enc.impacts[i]
        assert 0 < len(qimp) <= QUERY_TOPK
        dots = {d: sum(w * imp.get(t, 0) for t, w in qimp.items()) for d, imp in doc_impacts.items()}
        for docid, score in runs["impact"][q]:
            assert score == dots[docid]
        assert runs["impact"][q][0][1] == max(dots.values())
        # hybrid: dense + de-quantised sparse for every hit found by both sides
        dense, sparse = dict(runs["dense"][q]), dict(runs["impact"][q])
        both = [(d, s) for d, s in runs["hybrid"][q] if d in dense and d in sparse]
        assert both
        for docid, score in both:
            assert score == pytest.approx(dense[docid] + sparse[docid] / (100.0 * 100.0), rel=1e-9)
        for mode in runs:  # deterministic order: score desc, docid asc
            assert runs[mode][q] == sorted(runs[mode][q], key=lambda h: (-h[1], h[0]))


def test_threads_do_not_change_runs(searcher, slice_index):
    import torch

    queries = slice_index[2]
    torch.set_num_threads(2)
    searcher.threads = 1
    one = searcher.search_all(queries, hits=10, batch_size=8, progress=False)
    # FAISS and torch share OpenMP: a 1-thread search must not leave encoding on one core
    assert torch.get_num_threads() == 2
    searcher.threads = 2
    two = searcher.search_all(queries, hits=10, batch_size=8, progress=False)
    assert one == two


def test_drop_query_id(searcher, slice_index):
    index_dir, doc_impacts, _ = slice_index
    docid = next(iter(doc_impacts))

    text = "cerebral white matter development in the human brain"
    kept = searcher.search_batch([docid], [text], ("dense",), hits=300)["dense"][docid]
    dropped = searcher.search_batch([docid], [text], ("dense",), hits=299, drop_query_id=True)["dense"][docid]
    assert docid in [d for d, _ in kept] and docid not in [d for d, _ in dropped]
    assert dropped == [h for h in kept if h[0] != docid]


def test_cli_writes_runs_and_provenance(slice_index, tmp_path, monkeypatch):
    from dupmae_ir.runs import read_trec
    from dupmae_ir.search.__main__ import main

    index_dir, _, queries = slice_index
    topics = tmp_path / "topics.tsv"
    topics.write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    monkeypatch.chdir(tmp_path)
    assert main(["--index", str(index_dir), "--topics", str(topics), "--mode", "dense", "impact", "hybrid",
                 "--hits", "10", "--fusion", "rrf", "--output", "runs/slice.{mode}.trec"]) == 0
    for mode in ("dense", "impact", "hybrid"):
        run = read_trec(tmp_path / "runs" / f"slice.{mode}.trec")
        assert set(run) == set(queries) and all(len(h) == 10 for h in run.values())
        prov = json.loads((tmp_path / "runs" / f"slice.{mode}.trec.json").read_text())
        assert prov["mode"] == mode and prov["index"] == str(index_dir.resolve())
    assert prov["fusion"]["fusion"] == "rrf"
    assert prov["query_config"]["dtype"] == "fp32"
    assert main(["--index", str(index_dir), "--topics", str(topics), "--hits", "5"]) == 0  # default output
    assert list((tmp_path / "runs").glob("index.topics.hybrid.trec"))
    # bf16 query encoding: recorded, and the dense run stays close to fp32's (same top hit for most queries)
    assert main(["--index", str(index_dir), "--topics", str(topics), "--mode", "dense", "--hits", "10", "--dtype",
                 "bf16", "--output", "runs/bf16.trec"]) == 0
    assert json.loads((tmp_path / "runs" / "bf16.trec.json").read_text())["query_config"]["dtype"] == "bf16"
    fp32, bf16 = read_trec(tmp_path / "runs" / "slice.dense.trec"), read_trec(tmp_path / "runs" / "bf16.trec")
    assert sum(fp32[q][0][0] == bf16[q][0][0] for q in queries) >= 0.8 * len(queries)


def test_query_terms_own_searches_only_the_query_pieces_and_is_recorded(slice_index, tmp_path, monkeypatch):
    """``--query-terms own``: the impact run is the exact dot product of the query's own pieces with the
    documents, the setting is in the run's provenance, and pre-encoded queries refuse it."""
    from dupmae_ir.runs import read_trec
    from dupmae_ir.search import DupMAESearcher
    from dupmae_ir.search.__main__ import main

    index_dir, doc_impacts, queries = slice_index
    topics = tmp_path / "topics.tsv"
    topics.write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    monkeypatch.chdir(tmp_path)
    assert main(["--index", str(index_dir), "--topics", str(topics), "--mode", "impact", "--hits", "300",
                 "--query-terms", "own", "--output", "own.trec"]) == 0
    assert json.loads((tmp_path / "own.trec.json").read_text())["query_config"]["query_terms"] == "own"
    run = read_trec(tmp_path / "own.trec")
    encoder = DupMAESearcher(index_dir, query_terms="own").encoder
    for q, text in queries.items():
        qimp = encoder.encode_queries([text]).impacts[0]
        assert set(qimp) <= set(encoder.tokenizer.tokenize(text))
        for docid, score in run.get(q, []):  # a query none of whose pieces a document holds finds nothing
            assert score == sum(w * doc_impacts[docid].get(t, 0) for t, w in qimp.items())
    assert sum(map(len, run.values())) > 100
    from dupmae_ir.errors import UserError

    with pytest.raises(UserError, match="--query-terms: invalid choice"):
        main(["--index", str(index_dir), "--topics", str(topics), "--query-terms", "some"])


def test_pre_encoded_queries_are_used_as_given(slice_index, tiny_checkpoint, tmp_path):
    """``encoded_queries``: the folder of ``dupmae_ir.encode.encode_queries`` replaces live encoding
    (what stock Pyserini reads), and the impact scores are exact dot products with those weights."""
    from dupmae_ir.encode import encode_queries
    from dupmae_ir.errors import IndexFormatError
    from dupmae_ir.index import load_encoded_queries
    from dupmae_ir.search import DupMAESearcher

    index_dir, doc_impacts, queries = slice_index
    folder = encode_queries(queries, str(tiny_checkpoint), tmp_path / "q")
    pre = load_encoded_queries(folder)
    searcher = DupMAESearcher(index_dir, encoded_queries=folder)
    runs = searcher.search_all(queries, ("impact",), hits=5, progress=False)["impact"]
    for q, text in queries.items():
        qimp = pre.impacts[text.strip()]
        for docid, score in runs[q]:
            assert score == sum(w * doc_impacts[docid].get(t, 0) for t, w in qimp.items())
    with pytest.raises(IndexFormatError, match="not pre-encoded"):
        searcher.search_batch(["x"], ["a query nobody encoded"])


def test_hybrid_plus_bm25_equals_stock_pyserini_fusion(slice_index, scifact_dir, tmp_path, monkeypatch):
    """``--mode hybrid+bm25``: the hybrid run fused with a BM25 run of the same slice; stock
    ``python -m pyserini.fusion --method normalize`` on the two written runs ranks the same, and the
    mode is refused without ``--bm25-index``."""
    from conftest import run_cli, write_corpus_slice

    from dupmae_ir.bm25 import build_bm25_index
    from dupmae_ir.errors import UserError
    from dupmae_ir.runs import read_trec
    from dupmae_ir.search.__main__ import main

    index_dir, _, queries = slice_index
    (tmp_path / "slice").mkdir()
    write_corpus_slice(scifact_dir, tmp_path / "slice" / "corpus.jsonl", 300)
    bm25 = build_bm25_index(tmp_path / "slice", tmp_path / "bm25", progress=False)
    topics = tmp_path / "topics.tsv"
    topics.write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="--bm25-index"):
        main(["--index", str(index_dir), "--topics", str(topics), "--mode", "hybrid+bm25"])
    assert main(["--index", str(index_dir), "--topics", str(topics), "--mode", "hybrid", "hybrid+bm25",
                 "--bm25-index", str(bm25), "--hits", "100", "--output", "runs/s.{mode}.trec"]) == 0
    assert run_cli("bm25", "--corpus", tmp_path / "slice", "--index", bm25, "--topics", topics, "--hits", "100",
                   "--output", "runs/bm25.trec", cwd=tmp_path).returncode == 0
    stock = subprocess.run([sys.executable, "-m", "pyserini.fusion", "--runs", "runs/s.hybrid.trec", "runs/bm25.trec",
                            "--method", "normalize", "--depth", "100", "--k", "100", "--output", "runs/stock.trec"],
                           capture_output=True, text=True)
    assert stock.returncode == 0, stock.stderr[-2000:]
    ours, theirs = read_trec(tmp_path / "runs/s.hybrid+bm25.trec"), read_trec(tmp_path / "runs/stock.trec")
    hybrid, bm25_run = read_trec(tmp_path / "runs/s.hybrid.trec"), read_trec(tmp_path / "runs/bm25.trec")
    assert set(ours) == set(theirs) == set(queries)
    for q in queries:
        assert [d for d, _ in ours[q][:10]] == [d for d, _ in theirs[q][:10]], q
        assert [d for d, _ in ours[q][:10]] != [d for d, _ in hybrid[q][:10]] or \
            [d for d, _ in ours[q][:10]] == [d for d, _ in bm25_run[q][:10]]  # a real fusion, not a copy
    prov = json.loads((tmp_path / "runs/s.hybrid+bm25.trec.json").read_text())
    assert prov["mode"] == "hybrid+bm25" and prov["bm25"]["index"] == str(bm25.resolve())
