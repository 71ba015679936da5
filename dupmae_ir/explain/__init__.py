"""Why a document matched a query: DupMAE's score taken apart, from the index files themselves.

DupMAE's score is ``h_q . h_d + mu_q . mu_d`` (paper section 3.4). The index stores both halves:

- dense: the document vector in FAISS (``faiss_index.reconstruct(row)``), dotted with the query's;
- sparse: Lucene's impact score is the integer ``sum_t q_t * d_t`` over vocabulary terms, ``q_t`` the
  query's quantised weight (what :class:`~dupmae_ir.search.DupMAESearcher` sends to Lucene) and
  ``d_t`` the document's, stored as the term's frequency in the impact index and read here from its
  postings (:mod:`.lucene`). ``alpha = 1/(s_q*s_d)`` de-quantises it; the hybrid score (sum fusion)
  is ``dense + alpha * sum_t q_t*d_t``. The sum here is exact; Lucene adds the term scores in float32,
  so a search hit's integer score equals it below 2^24 (16,777,216) and is rounded above (a few units
  in 2e7, e.g. with the untuned default backbone's large weights).

Each term also says whether it is one of the WordPiece pieces of the document's text (the model's
tokenizer) or an *expansion*: a term the document never says that the model gave weight to.

Library::

    from dupmae_ir.explain import explain
    e = explain(searcher, "vitamin d and cancer", "4983", corpus_text="title text")
    e.impact_score == sum(t.impact for t in e.terms)

Command: ``python -m dupmae_ir.explain --index DIR --query TEXT --docid ID [--corpus C]``.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace

from ..errors import UserError

__all__ = ["Explainer", "Explanation", "TermContribution", "UnknownDocumentError", "document_pieces", "explain",
           "explainer_for", "find_document", "with_text"]


class UnknownDocumentError(UserError):
    """A docid that the index does not hold."""


@dataclass(frozen=True)
class TermContribution:
    """One vocabulary term of the sparse score."""

    term: str
    query_weight: int  # q_t: the query's integer weight (sent to Lucene)
    doc_weight: int  # d_t: the document's integer weight stored in the Lucene index (0: absent)
    impact: int  # q_t * d_t
    score: float  # q_t * d_t * alpha
    in_text: bool | None  # a WordPiece piece of the document's text (False: an expansion; None: no text given)


@dataclass(frozen=True)
class Explanation:
    """The scores of one (query, document) pair and the sparse score's terms, largest first."""

    query: str
    docid: str
    alpha: float
    dense_score: float | None  # h_q . h_d (None: the index has no dense part)
    impact_score: int | None  # sum_t q_t * d_t, exact (Lucene's float32 sum rounds it above 2^24; None: no impact)
    sparse_score: float | None  # impact_score * alpha
    hybrid_score: float | None  # dense + alpha * impact (DupMAE's sum fusion)
    terms: list[TermContribution]  # q_t * d_t > 0, or every query term the index holds with all_terms
    query_terms: int  # terms of the query encoding
    matched_terms: int  # terms with q_t * d_t > 0
    dropped_terms: list[str] = field(default_factory=list)  # in the document, but not sent (min_idf)
    text_matches: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, term) in the text

    @property
    def expansion_terms(self) -> list[TermContribution]:
        return [t for t in self.terms if t.impact > 0 and t.in_text is False]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["text_matches"] = [list(m) for m in self.text_matches]
        return d


def document_pieces(tokenizer, text: str) -> list[tuple[str, int, int]]:
    """``(piece, start, end)`` of every WordPiece piece of ``text`` (whole text, no special tokens)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    return [(p, int(s), int(e)) for p, (s, e) in zip(pieces, enc["offset_mapping"])]


def with_text(e: Explanation, pieces: list[tuple[str, int, int]]) -> Explanation:
    """``e`` with each term's ``in_text`` flag and its matched pieces' offsets (``text_matches``), from
    the :func:`document_pieces` of the document's text (or of a prefix of it: then ``in_text`` is about
    that prefix)."""
    piece_set = {p for p, _, _ in pieces}
    matched = {t.term for t in e.terms if t.impact > 0}
    return replace(e, terms=[replace(t, in_text=t.term in piece_set) for t in e.terms],
                   text_matches=[(a, b, p) for p, a, b in pieces if p in matched])


class Explainer:
    """Explanations over one searcher: its Lucene reader and docid -> FAISS row map are opened once.
    It holds the searcher weakly (cached per searcher by :func:`explainer_for`); the reader closes
    with it."""

    QUERY_CACHE = 64  # recent query encodings kept (a page explains the same query for each hit)

    def __init__(self, searcher):
        self._searcher = weakref.ref(searcher)  # a strong one would keep explainer_for's cache key alive
        self._rows = {d: i for i, d in enumerate(searcher.docids)} if searcher.docids is not None else None
        self.postings = None
        if searcher.impact_searcher is not None:
            from .lucene import ImpactPostings

            self.postings = ImpactPostings(searcher.info.impact)
            weakref.finalize(self, self.postings.close)
        self._queries: OrderedDict = OrderedDict()

    @property
    def searcher(self):
        s = self._searcher()
        if s is None:
            raise RuntimeError("the searcher of this Explainer is gone")
        return s

    def encode_query(self, query: str):
        """The query's :class:`~dupmae_ir.inference.EncodedBatch` (one row), encoded as the searcher
        encodes it (live, or from its pre-encoded queries); recent queries are kept."""
        enc = self._queries.get(query)
        if enc is None:
            enc = self._queries[query] = self.searcher.encode_batch([query])
            if len(self._queries) > self.QUERY_CACHE:
                self._queries.popitem(last=False)
        else:
            self._queries.move_to_end(query)
        return enc

    def _check(self, docids: list[str]) -> list[int]:
        """Lucene ids of ``docids`` (-1 without an impact index); an unknown docid raises."""
        where = self.searcher.info.root
        lucene_ids = []
        for docid in docids:
            lid = self.postings.lucene_docid(docid) if self.postings is not None else -1
            if (self._rows is not None and docid not in self._rows) or (self.postings is not None and lid < 0):
                raise UnknownDocumentError(f"docid {docid!r}", f"not a document of the index {where}",
                                           "pass a docid that the index holds (e.g. one of its search hits)")
            lucene_ids.append(lid)
        return lucene_ids

    def explain_many(self, query: str, docids: list[str], texts: list[str | None] | None = None,
                     all_terms: bool = False) -> list[Explanation]:
        """One :class:`Explanation` per docid (the query is encoded once, each term looked up once per
        segment). ``texts``: each document's text (``dupmae_ir.data.doc_text``) for the ``in_text``
        flags, or None. ``all_terms``: list every query term the index holds, not only matches."""
        import numpy as np

        docids = [str(d) for d in docids]
        texts = list(texts) if texts is not None else [None] * len(docids)
        lucene_ids = self._check(docids)
        s = self.searcher
        enc = self.encode_query(query)
        qdense, qimp = enc.dense[0], enc.impacts[0]
        alpha = s.alpha
        weights: dict[int, dict[str, int]] = {}
        sent: set[str] = set()
        if self.postings is not None:
            sent = set(s.impact_searcher.sent_terms(qimp))  # exactly the terms the searcher sends to Lucene
            in_index = [t for t in qimp if t in sent and s.impact_searcher.doc_freq(t) > 0]
            sent = set(in_index)
            weights = self.postings.weights(in_index, lucene_ids)
        out = []
        for docid, lid, text in zip(docids, lucene_ids, texts):
            dense = None
            if self._rows is not None:
                vec = s.faiss_index.reconstruct(self._rows[docid])  # (d,)
                dense = float(np.dot(np.asarray(vec, dtype=np.float32), np.asarray(qdense, dtype=np.float32)))
            doc_w = weights.get(lid, {})
            terms = []
            candidates = sent if all_terms else [t for t in doc_w if t in sent]
            for t in candidates:
                d = doc_w.get(t, 0)
                terms.append(TermContribution(t, qimp[t], d, qimp[t] * d, qimp[t] * d * alpha, None))
            terms.sort(key=lambda c: (-c.impact, -c.query_weight, c.term))
            impact = sum(c.impact for c in terms) if self.postings is not None else None
            sparse = impact * alpha if impact is not None else None
            hybrid = dense + sparse if dense is not None and sparse is not None else None
            matched = sum(1 for c in terms if c.impact > 0)
            e = Explanation(query, docid, alpha, dense, impact, sparse, hybrid, terms, len(qimp), matched,
                            sorted(t for t in doc_w if t not in sent))
            out.append(with_text(e, document_pieces(s.encoder.tokenizer, text)) if text is not None else e)
        return out

    def explain(self, query: str, docid: str, text: str | None = None, all_terms: bool = False) -> Explanation:
        return self.explain_many(query, [docid], [text], all_terms)[0]

    def close(self) -> None:
        if self.postings is not None:
            self.postings.close()


_explainers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explainer_for(searcher) -> Explainer:
    """The searcher's :class:`Explainer`, created on first use and kept as long as the searcher lives."""
    ex = _explainers.get(searcher)
    if ex is None:
        ex = _explainers[searcher] = Explainer(searcher)
    return ex


def explain(searcher, query: str, docid: str, corpus_text: str | None = None,
            all_terms: bool = False) -> Explanation:
    """Take apart the score of ``docid`` for ``query`` (see the module doc). ``corpus_text``: the
    document's text (title and text as ``dupmae_ir.data.doc_text`` joins them) for the ``in_text``
    flags. Raises :class:`UnknownDocumentError` (a ``UserError``) for a docid the index lacks."""
    return explainer_for(searcher).explain(query, docid, corpus_text, all_terms)


def find_document(corpus, docid: str, data_dir=None):
    """The :class:`~dupmae_ir.data.Doc` of ``docid`` in a collection (streamed until found), or None."""
    from ..data import resolve

    for doc in resolve(corpus, data_dir=data_dir).iter_docs(check_duplicates=False):
        if doc.id == docid:
            return doc
    return None
