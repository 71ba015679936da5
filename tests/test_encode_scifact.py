"""Acceptance on the full SciFact corpus (5,183 docs), default backbone, via the session fixture
``scifact_index`` (one encode per test session, shared with the search/eval tests)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

N_DOCS = 5183


def test_both_indexes_hold_every_doc(scifact_index, scifact_dir):
    import faiss

    from dupmae_ir.data import resolve

    ids = [d.id for d in resolve(scifact_dir).iter_docs()]
    assert len(ids) == N_DOCS
    index = faiss.read_index(str(scifact_index / "dense" / "index"))
    assert index.ntotal == N_DOCS and index.d == 384
    assert (scifact_index / "dense" / "docid").read_text().split() == ids
    meta = json.loads((scifact_index / "dupmae_index.json").read_text())
    assert meta["docs"] == N_DOCS and meta["impact"]["anserini_counters"]["indexed"] == N_DOCS
    from dupmae_ir.java import start_jvm

    start_jvm()
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(scifact_index / "impact"))
    assert reader.stats()["documents"] == N_DOCS
    for docid in (ids[0], ids[N_DOCS // 2], ids[-1]):
        assert reader.convert_collection_docid_to_internal_docid(docid) >= 0


def test_pyserini_searchers_agree_with_toolkit_scores(scifact_index, scifact_dir):
    """Top hits of FaissSearcher / LuceneImpactSearcher = the toolkit's own scores (dense 1e-4, impact
    exact integer dot product) for a sample of test queries; hit docs re-encoded independently."""
    from pyserini.search.faiss import FaissSearcher
    from pyserini.search.lucene import LuceneImpactSearcher

    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.java import raise_max_clause_count
    from dupmae_ir.pyserini_encoders import DupMAEImpactQueryEncoder, DupMAEQueryEncoder

    raise_max_clause_count()
    meta = json.loads((scifact_index / "dupmae_index.json").read_text())
    qenc = DupMAEQueryEncoder("default", dtype=meta["dtype"])
    docs = {d.id: doc_text(d) for d in resolve(scifact_dir).iter_docs()}
    queries = list(resolve(scifact_dir).queries("test").values())[:5]
    dense_searcher = FaissSearcher(str(scifact_index / "dense"), qenc)
    impact_searcher = LuceneImpactSearcher(str(scifact_index / "impact"), DupMAEImpactQueryEncoder(qenc.encoder),
                                           min_idf=-1)
    for q in queries:
        qd = qenc.encode(q)  # (384,)
        hits = dense_searcher.search(q, k=10)
        enc = qenc.encoder.encode_docs([docs[h.docid] for h in hits], batch_size=16)
        np.testing.assert_allclose([h.score for h in hits], enc.dense @ qd, atol=1e-4)
        qi = qenc.encoder.encode_queries([q]).impacts[0]
        hits = impact_searcher.search(q, k=10)
        enc = qenc.encoder.encode_docs([docs[h.docid] for h in hits], batch_size=16)
        exact = [sum(w * d.get(t, 0) for t, w in qi.items()) for d in enc.impacts]
        # Lucene accumulates the integer products in float32: exact below 2**24, float32-rounded above
        # (the default backbone's untrained head gives sums of ~2.5e7)
        np.testing.assert_allclose([h.score for h in hits], exact, rtol=2e-7 * len(qi) ** 0.5, atol=0)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_session_queries_are_pre_encoded(scifact_index):
    meta = json.loads((scifact_index / "queries" / "dupmae_queries.json").read_text())
    assert meta["queries"] == 300
    assert (scifact_index / "queries" / "dense" / "embedding.pkl").is_file()
    assert len((scifact_index / "queries" / "topics.tsv").read_text().splitlines()) == 300
