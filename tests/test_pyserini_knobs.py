"""The FAISS search knobs through the Pyserini adapters: stock ``FaissSearcher`` on an ``encode --faiss hnsw``
index, with ``efSearch`` set by ``tune_faiss_searcher`` (Python) or by ``dupmae_ir.pyserini_hybrid
dense --ef-search`` (its loader hook), returns exactly ``dupmae_ir.search``'s dense run at the same knob,
and a tiny efSearch keeps less of the exact top-10 than a large one (a 300-document SciFact slice, a
sparse graph: M 4, efConstruction 8; pre-encoded queries, so both routes search the same vectors)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import faiss_vectors, write_corpus_slice

K = 10


@pytest.fixture(scope="module")
def hnsw_index(tmp_path_factory, scifact_dir, tiny_checkpoint):
    from dupmae_ir.data import resolve
    from dupmae_ir.encode.__main__ import main as encode_main
    from dupmae_ir.errors import run_command
    from dupmae_ir.java import start_jvm

    start_jvm()  # before the tests import pyserini (dupmae_ir/java.py)

    tmp = tmp_path_factory.mktemp("pyserini_knobs")
    corpus = write_corpus_slice(scifact_dir, tmp / "corpus.jsonl", 300)
    topics = dict(list(resolve(scifact_dir).queries("test").items())[:40])
    (tmp / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in topics.items()))
    index = tmp / "idx"
    assert run_command(encode_main, ["--corpus", str(corpus), "--topics", str(tmp / "topics.tsv"), "--encoder",
                                     str(tiny_checkpoint), "--output", str(index), "--dense-only", "--faiss", "hnsw",
                                     "--hnsw-m", "4", "--ef-construction", "8", "--dtype", "fp32",
                                     "--no-progress"]) == 0
    return index, topics


def _ours(index, topics, ef: int) -> dict:
    from dupmae_ir.search import DupMAESearcher

    searcher = DupMAESearcher(index, encoded_queries=index / "queries", ef_search=ef)
    assert searcher.dense_search == {"faiss": "hnsw", "ef_search": ef}
    return searcher.search_all(topics, ("dense",), hits=K, progress=False)["dense"]


def _stock(searcher, topics) -> dict:
    hits = searcher.batch_search(list(topics.values()), list(topics), k=K, threads=1)
    return {q: [(h.docid, float(h.score)) for h in hits[q]] for q in topics}


def _same_run(a: dict, b: dict) -> None:
    """Same scores rank by rank, and the same documents wherever a score is not tied (the tiny model's
    vectors are nearly parallel: tied documents may come in either order)."""
    assert a.keys() == b.keys()
    for q in a:
        sa, sb = [s for _, s in a[q]], [s for _, s in b[q]]
        np.testing.assert_allclose(sa, sb, rtol=1e-6)
        for (da, x), (db, _) in zip(a[q], b[q]):
            ties = sum(abs(s - x) <= 1e-6 * abs(x) for s in sa)
            assert da == db or ties > 1, (q, da, db)


def _recall(run: dict, exact: dict) -> float:
    return float(np.mean([len({d for d, _ in run[q]} & set(exact[q])) / K for q in exact]))


@pytest.fixture(scope="module")
def exact(hnsw_index):
    from dupmae_ir.index import read_query_vectors

    index, topics = hnsw_index
    docs, ids = faiss_vectors(index)
    vectors = read_query_vectors(index / "queries")
    return {q: [ids[i] for i in np.argsort(-(docs @ vectors[t]))[:K]] for q, t in topics.items()}  # (N,) scores


def test_tune_faiss_searcher_matches_dupmae_search(hnsw_index, exact):
    import faiss
    from pyserini.search.faiss import FaissSearcher

    from dupmae_ir.pyserini_encoders import DupMAEQueryEncoder, tune_faiss_searcher

    index, topics = hnsw_index
    encoder = DupMAEQueryEncoder(encoded_query_dir=str(index / "queries"))
    recall = {}
    for ef in (1, 256):
        searcher = FaissSearcher(str(index / "dense"), encoder)
        assert tune_faiss_searcher(searcher, ef_search=ef) == {"faiss": "hnsw", "ef_search": ef}
        assert faiss.downcast_index(searcher.index).hnsw.efSearch == ef
        stock = _stock(searcher, topics)
        _same_run(stock, _ours(index, topics, ef))
        recall[ef] = _recall(stock, exact)
    assert recall[1] + 0.5 < recall[256], recall  # ties among near-parallel vectors cap the exact top-K overlap


def test_launcher_flags_reach_every_faiss_searcher(hnsw_index, tmp_path):
    """``dense --ef-search 3`` is taken from the command line and set on each index Pyserini's hybrid CLI
    loads; without it, the value stored in the file (128); on a flat index, a one-line error."""
    import faiss
    from pyserini.search.faiss import FaissSearcher

    from dupmae_ir.dense_index import DenseIndexSpec, build_dense_index
    from dupmae_ir.errors import UserError
    from dupmae_ir.pyserini_encoders import DupMAEQueryEncoder
    from dupmae_ir.pyserini_hybrid import set_dense_knobs, split_dense_knobs

    index, topics = hnsw_index
    argv = ["dense", "--index", str(index / "dense"), "--ef-search", "3", "--encoder-class", "dupmae",
            "sparse", "--index", "impact", "--impact", "run", "--hits", "5"]
    rest, ef, nprobe = split_dense_knobs(argv)
    assert (ef, nprobe) == (3, None) and rest == [*argv[:3], *argv[5:]]
    with pytest.raises(UserError, match="--nprobe"):
        split_dense_knobs(["dense", "--nprobe", "0"])
    encoder = DupMAEQueryEncoder(encoded_query_dir=str(index / "queries"))
    vectors, ids = faiss_vectors(index)
    np.save(tmp_path / "0.npy", vectors)
    (tmp_path / "0.docid").write_text("".join(f"{d}\n" for d in ids))
    build_dense_index([tmp_path / "0.npy"], [tmp_path / "0.docid"], tmp_path / "flat", DenseIndexSpec("flat"))
    try:
        set_dense_knobs(ef, nprobe)
        searcher = FaissSearcher(str(index / "dense"), encoder)
        assert faiss.downcast_index(searcher.index).hnsw.efSearch == 3
        assert searcher.dense_search == {"faiss": "hnsw", "ef_search": 3}
        _same_run(_stock(searcher, topics), _ours(index, topics, 3))
        with pytest.raises(UserError, match=r"--ef-search: applies to HNSW indexes; .*flat.index is a 'flat' index"):
            FaissSearcher(str(tmp_path / "flat"), encoder)
    finally:
        set_dense_knobs(None, None)
    assert faiss.downcast_index(FaissSearcher(str(index / "dense"), encoder).index).hnsw.efSearch == 128
