"""bench/scale_search.py's replication: an index built by `encode merge` from replicated shards holds every
base document R times under new ids, with the same impact postings and nearby (replicas) or equal (copy 0)
vectors, and the BM25 texts carry the same ids."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import ROOT, faiss_vectors, lucene_impact_postings, write_corpus_slice

sys.path.insert(0, str(ROOT / "bench"))
import scale_search  # noqa: E402


@pytest.mark.slow
def test_replicated_shards_merge_into_an_index_of_copies(tmp_path, tiny_checkpoint):
    from dupmae_ir.encode import encode_corpus, merge_shards

    corpus = write_corpus_slice("default", tmp_path / "corpus.jsonl", 40)
    shards = [encode_corpus(corpus, tmp_path / f"base-{i}", encoder=tiny_checkpoint, chunk_size=16, shard_id=i,
                            shard_num=2, dtype="fp32", progress=False) for i in (0, 1)]
    base = merge_shards(shards, tmp_path / "base-index")
    folders = scale_search.replicate(shards, tmp_path / "rep", copies=3, noise=0.1)
    index = merge_shards(folders, tmp_path / "n120" / "index-flat")

    meta = json.loads((index / "dupmae_index.json").read_text())
    assert meta["docs"] == 120 and "x3 (bench/scale_search.py replication)" in meta["corpus"]
    base_vectors, base_ids = faiss_vectors(base)
    vectors, ids = faiss_vectors(index)
    assert ids == base_ids + [f"{d}-r1" for d in base_ids] + [f"{d}-r2" for d in base_ids]
    assert np.array_equal(vectors[:40], base_vectors)  # copy 0 is the base itself
    for r in (1, 2):
        copy = vectors[40 * r:40 * (r + 1)]
        assert not np.allclose(copy, base_vectors)  # noise: no exact ties between copies
        cosine = (copy * base_vectors).sum(1) / np.linalg.norm(copy, axis=1) / np.linalg.norm(base_vectors, axis=1)
        assert cosine.min() > 0.95
    assert not np.allclose(vectors[40:80], vectors[80:120])  # each copy draws its own noise

    base_postings = lucene_impact_postings(base / "impact", docs=40)
    postings = lucene_impact_postings(index / "impact", docs=120)
    assert postings.keys() == base_postings.keys()
    for term, plist in base_postings.items():
        expected = sorted(plist + [(f"{d}-r{r}", w) for r in (1, 2) for d, w in plist])
        assert postings[term] == expected, term

    dense = scale_search.dense_only(folders, tmp_path / "dense-view")
    flat8 = merge_shards(dense, tmp_path / "n120" / "index-flat-int8", faiss="flat-int8")
    assert not (flat8 / "impact").exists() and faiss_vectors(flat8)[1] == ids

    from dupmae_ir.search import DupMAESearcher

    view = scale_search.hybrid_view(tmp_path / "n120", "flat-int8")  # flat's impact + the int8 dense part
    queries = {"q1": docs_text(corpus, 3), "q2": docs_text(corpus, 17)}
    served, dense8, flat_index = (DupMAESearcher(p) for p in (view, flat8, index))
    def search(searcher, *modes):
        return searcher.search_batch(list(queries), list(queries.values()), modes=modes, hits=20)

    runs = search(served, "dense", "impact", "hybrid")
    assert runs["dense"] == search(dense8, "dense")["dense"]
    assert runs["impact"] == search(flat_index, "impact")["impact"]
    assert all(runs["hybrid"][q] for q in queries)
    topics = tmp_path / "topics.tsv"
    topics.write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    opened = scale_search.measure_searcher(view, topics, None)  # the served-memory child, in this process
    assert opened["queries"] == 2 and opened["dense_search"] == served.dense_search == {"faiss": "flat-int8"}
    merge_shards(dense, tmp_path / "n120" / "index-hnsw", faiss="hnsw", hnsw_m=8)
    graph = scale_search.hybrid_view(tmp_path / "n120", "hnsw")
    assert scale_search.measure_searcher(graph, topics, 64)["dense_search"] == {"faiss": "hnsw", "ef_search": 64}
    moved = tmp_path / "moved"  # relative links: the work folder can move
    (tmp_path / "n120").rename(moved)
    assert (moved / "index-hybrid-hnsw" / "impact").resolve() == (moved / "index-flat" / "impact").resolve()
    assert scale_search.hybrid_view(moved, "hnsw") == moved / "index-hybrid-hnsw"

    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    texts = scale_search.replicated_docs(corpus, tmp_path / "texts.jsonl", 3)
    rows = [json.loads(line) for line in texts.read_text().splitlines()]
    assert [r["_id"] for r in rows] == ids
    assert rows[45]["text"] == docs[5]["text"]


def docs_text(corpus, i: int) -> str:
    """The first words of the corpus's document ``i`` (a query that finds it)."""
    doc = json.loads(corpus.read_text().splitlines()[i])
    return " ".join(doc["text"].split()[:8])


def test_served_ef_search_is_the_smallest_reaching_the_recall_else_the_largest():
    rows = [{"type": "flat", "ef_search": None, "recall@1000": 1.0}]
    rows += [{"type": "hnsw", "ef_search": ef, "recall@1000": r} for ef, r in ((256, 0.9), (1024, 0.985), (2048, 0.99))]
    rows += [{"type": "hnsw-int8", "ef_search": ef, "recall@1000": r} for ef, r in ((256, 0.9), (2048, 0.95))]
    dense = {"rows": rows}
    assert scale_search.served_ef_search(dense, "hnsw") == 1024
    assert scale_search.served_ef_search({"rows": rows[::-1]}, "hnsw") == 1024  # in whatever order measured
    assert scale_search.served_ef_search(dense, "hnsw-int8") == 2048  # none reaches 0.98: the largest measured
    assert scale_search.served_ef_search(dense, "flat") is None
