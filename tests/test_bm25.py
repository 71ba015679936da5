"""BM25 baseline on real SciFact: Pyserini's published flat BM25 nDCG@10 (0.679) checks that topics,
qrels, document text and scoring are right (~1 minute: indexing 5,183 docs + 300 queries)."""
from __future__ import annotations

import json

import pytest

from dupmae_ir.bm25 import BM25_META, BM25Searcher, build_bm25_index
from dupmae_ir.runs import score_run

pytestmark = pytest.mark.slow  # the full SciFact collection / stock Pyserini CLIs


@pytest.fixture(scope="module")
def scifact(scifact_dir):
    from dupmae_ir.data import resolve

    return resolve(scifact_dir)


@pytest.fixture(scope="module")
def bm25_index(scifact, tmp_path_factory):
    return build_bm25_index(scifact, tmp_path_factory.mktemp("bm25") / "scifact", progress=False)


def test_scifact_bm25_matches_pyserini_published(scifact, bm25_index):
    queries, qrels = scifact.queries("test"), scifact.qrels("test")
    assert len(queries) == 300
    run = BM25Searcher(bm25_index).search(queries, hits=1000, progress=False)
    scores = score_run(run, qrels, ("nDCG@10", "R@100")).values
    assert scores["nDCG@10"] == pytest.approx(0.679, abs=0.005)
    assert scores["R@100"] > 0.9
    for hits in run.values():  # best first, ties by docid
        assert hits == sorted(hits, key=lambda h: (-h[1], h[0]))


def test_index_is_reused_and_has_provenance(scifact, bm25_index):
    meta = json.loads((bm25_index / BM25_META).read_text())
    assert meta["docs"] == 5183 and meta["collection"] and "dupmae_ir_version" in meta
    mtime = (bm25_index / BM25_META).stat().st_mtime
    assert build_bm25_index(scifact, bm25_index, progress=False) == bm25_index
    assert (bm25_index / BM25_META).stat().st_mtime == mtime


def test_drop_query_id_removes_the_querys_own_document(scifact, bm25_index):
    # A SciFact document's own text as a query whose id is that doc id: it is its own best hit.
    from dupmae_ir.data import doc_text

    doc = next(d for d in scifact.iter_docs() if d.id == "4983")
    searcher = BM25Searcher(bm25_index)
    kept = searcher.search({"4983": doc_text(doc)[:300]}, hits=5, progress=False)["4983"]
    dropped = searcher.search({"4983": doc_text(doc)[:300]}, hits=5, drop_query_id=True, progress=False)["4983"]
    assert kept[0][0] == "4983"
    assert "4983" not in [d for d, _ in dropped] and len(dropped) == 5
    assert dropped == kept[1:] + dropped[4:]
