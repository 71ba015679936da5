"""A document's stored impacts, read from the Lucene impact index itself (postings, through pyjnius).

Anserini's ``--impact --pretokenized`` indexing stores each document's integer weight ``d_t`` as the
frequency of term ``t`` in the field ``contents``; Lucene's impact score is ``sum_t q_t * d_t``. The
external docid is the stored, indexed ``id`` field (mapped with Anserini's ``IndexReaderUtils``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

FIELD = "contents"
NO_MORE_DOCS = 2147483647  # Lucene's DocIdSetIterator.NO_MORE_DOCS


class ImpactPostings:
    """One open ``DirectoryReader`` over an impact index; :meth:`close` releases it."""

    def __init__(self, index_dir: str | Path):
        from ..java import start_jvm

        start_jvm()
        from jnius import autoclass

        self._utils = autoclass("io.anserini.index.IndexReaderUtils")
        self._bytes_ref = autoclass("org.apache.lucene.util.BytesRef")
        self._freqs = autoclass("org.apache.lucene.index.PostingsEnum").FREQS
        self.reader = self._utils.getReader(str(index_dir))
        self._keys: dict = {}  # term -> BytesRef: the vocabulary is bounded (~30k WordPiece terms)
        leaves = self.reader.leaves()
        self._leaves = [leaves.get(i) for i in range(leaves.size())]  # segment contexts, by docBase

    @property
    def num_docs(self) -> int:
        return int(self.reader.numDocs())

    def lucene_docid(self, docid: str) -> int:
        """Lucene's internal id of an external docid, -1 when the index does not hold it."""
        return int(self._utils.convertDocidToLuceneDocid(self.reader, docid))

    def weights(self, terms: Iterable[str], lucene_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """``{lucene_id: {term: d_t}}`` for the given terms (absent terms are left out).

        Per segment, each term is looked up once (``TermsEnum.seekExact``) and its postings are
        advanced through the sorted documents of that segment (``PostingsEnum.advance``)."""
        terms = list(terms)
        out: dict[int, dict[str, int]] = {i: {} for i in lucene_ids}
        targets = sorted(set(lucene_ids))
        keys = [self._key(t) for t in terms]
        for ctx in self._leaves:
            base = int(ctx.docBase)
            leaf = ctx.reader()
            local = [i - base for i in targets if base <= i < base + int(leaf.maxDoc())]
            field_terms = leaf.terms(FIELD) if local else None
            if field_terms is None:
                continue
            terms_enum = field_terms.iterator()
            for term, key in zip(terms, keys):
                if not terms_enum.seekExact(key):
                    continue
                postings = terms_enum.postings(None, self._freqs)
                at = -1  # the enum's position, tracked here: one Java call fewer per document
                for doc in local:
                    if at < doc:
                        at = int(postings.advance(doc))
                    if at == NO_MORE_DOCS:
                        break
                    if at == doc:
                        out[doc + base][term] = int(postings.freq())
        return out

    def _key(self, term: str):
        key = self._keys.get(term)
        if key is None:
            key = self._keys[term] = self._bytes_ref(term.encode("utf-8"))
        return key

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
