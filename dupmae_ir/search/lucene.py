"""Impact search on a Lucene impact index, with Lucene's top-k pruning.

Pyserini's ``LuceneImpactSearcher`` goes through Anserini's ``SimpleImpactSearcher``, which (Anserini
1.7) searches with a sort (score, then the docid string) and rebuilds every hit from its stored
document: the sort makes Lucene score every posting of every query term, and a DupMAE query has
hundreds of terms. :class:`ImpactSearcher` asks Lucene for the plain top ``k`` by score instead
(``IndexSearcher.search(query, k)``: block-max WAND over the impacts, exact scores), builds the query
with one parser call rather than one call per term, and takes the hits back as two arrays. Scores are
Anserini's exactly (``ImpactSimilarity``: query weight x stored impact, summed); ties are ordered by
the caller (:func:`dupmae_ir.runs.rank_hits`: score, then docid).
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

FIELD = "contents"  # Anserini's field of JsonVectorCollection impacts


def _quoted(token: str) -> str:
    """A token as one quoted term of Lucene's classic query syntax (no operator, no wildcard)."""
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImpactSearcher:
    """Top-k impact search of ``{token: int}`` queries over one Lucene impact index (thread-safe)."""

    def __init__(self, index_dir: str, min_idf: float = -1):
        from ..java import start_jvm

        start_jvm()
        from jnius import autoclass, cast

        paths = autoclass("java.nio.file.Paths")
        directory = autoclass("org.apache.lucene.store.FSDirectory").open(paths.get(str(index_dir)))
        self.reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
        self.searcher = autoclass("org.apache.lucene.search.IndexSearcher")(
            cast("org.apache.lucene.index.IndexReader", self.reader))
        self.searcher.setSimilarity(autoclass("io.anserini.search.similarity.ImpactSimilarity")())
        self._scored_docs = autoclass("io.anserini.search.ScoredDocs")
        self._parser_class = autoclass("org.apache.lucene.queryparser.classic.QueryParser")
        self._analyzer = autoclass("org.apache.lucene.analysis.core.WhitespaceAnalyzer")()
        self._term = autoclass("org.apache.lucene.index.Term")
        self._local = threading.local()  # QueryParser is not thread-safe: one per thread
        self._pool: ThreadPoolExecutor | None = None
        self.num_docs = int(self.reader.numDocs())
        self.min_idf = min_idf

    def _parser(self):
        parser = getattr(self._local, "parser", None)
        if parser is None:
            parser = self._local.parser = self._parser_class(FIELD, self._analyzer)
        return parser

    def _keep(self, token: str) -> bool:
        """Pyserini's ``min_idf`` rule: a token with idf = log(N / df) <= min_idf is dropped."""
        df = self.reader.docFreq(self._term(FIELD, token))
        return df > 0 and math.log(self.num_docs / df) > self.min_idf

    def doc_freq(self, token: str) -> int:
        return int(self.reader.docFreq(self._term(FIELD, token)))

    def sent_terms(self, impacts: dict[str, int]) -> dict[str, int]:
        """The query terms :meth:`search` sends to Lucene: positive weights, and with ``min_idf >= 0``
        only tokens whose idf exceeds it (terms absent from the index then drop too)."""
        return {t: w for t, w in impacts.items() if w > 0 and (self.min_idf < 0 or self._keep(t))}

    def search(self, impacts: dict[str, int], k: int) -> list[tuple[str, float]]:
        """The top ``k`` documents of one query, ``[(docid, score), ...]`` by score."""
        terms = " ".join(f"{_quoted(t)}^{int(w)}" for t, w in self.sent_terms(impacts).items())
        if not terms or k <= 0:
            return []
        top = self.searcher.search(self._parser().parse(terms), k)
        hits = self._scored_docs.fromTopDocs(top, self.searcher)  # docids and scores as two arrays
        return list(zip(hits.docids, map(float, hits.scores)))

    def batch_search(self, queries: list[dict[str, int]], k: int, threads: int = 1) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each query, ``threads`` at a time (the JVM runs them in parallel)."""
        if threads <= 1 or len(queries) <= 1:
            return [self.search(q, k) for q in queries]
        if self._pool is None or self._pool._max_workers != threads:  # kept: its threads stay attached to the JVM
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lucene")
        return list(self._pool.map(lambda q: self.search(q, k), queries))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self.reader.close()
