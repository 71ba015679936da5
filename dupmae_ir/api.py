"""The front door for Python users: index a collection, then search it (``import dupmae_ir`` exposes both).

    from dupmae_ir import Indexer, Searcher

    index = Indexer("default").index("default", "indexes/scifact")  # encoder, then collection
    for docid, score in Searcher(index).search("vitamin D deficiency and cancer risk", k=5):
        print(docid, score)

:class:`Indexer` is :func:`dupmae_ir.encode.encode_corpus` (one pass into a FAISS index and a Lucene
impact index, checked, locked and resumable, as ``python -m dupmae_ir.encode`` does);
:class:`Searcher` is :class:`dupmae_ir.search.DupMAESearcher` (dense, impact or hybrid search, as
``python -m dupmae_ir.search`` does). Both hold their settings; nothing loads until it is used.
"""
from __future__ import annotations

import os
from pathlib import Path

Hits = list[tuple[str, float]]


class Indexer:
    """Encodes collections with one encoder: ``encoder`` is a DupMAE checkpoint folder, a Hugging Face
    id, or ``"default"`` (the bundled MiniLM-L6 backbone, untrained for DupMAE)."""

    def __init__(self, encoder: str | os.PathLike = "default", *, device: str = "cpu", dtype: str = "auto",
                 batch_size: int = 32, doc_max_length: int | None = None):
        self.encoder, self.device, self.dtype = str(encoder), device, dtype
        self.batch_size, self.doc_max_length = batch_size, doc_max_length

    def index(self, corpus: str | os.PathLike, output: str | os.PathLike, *, overwrite: bool = False,
              progress: bool = True) -> Path:
        """Encode ``corpus`` (a collection name such as ``"default"``, a BEIR folder or a JSONL file) into
        the index folder ``output`` and return it. ``overwrite`` replaces an earlier index there (never a
        folder the toolkit did not write)."""
        from .encode import encode_corpus

        return encode_corpus(corpus, output, encoder=self.encoder, batch_size=self.batch_size, dtype=self.dtype,
                             device=self.device, doc_max_length=self.doc_max_length, overwrite=overwrite,
                             progress=progress)


class Searcher:
    """Searches one index folder written by :class:`Indexer` (or ``python -m dupmae_ir.encode``).
    ``mode``: ``"hybrid"`` (DupMAE's sum of the dense and de-quantised impact scores), ``"dense"`` or
    ``"impact"``."""

    def __init__(self, index: str | os.PathLike, *, threads: int = 1, device: str = "cpu", dtype: str = "fp32"):
        from .search import DupMAESearcher

        self.searcher = DupMAESearcher(index, threads=threads, device=device, dtype=dtype)

    def search(self, query: str, k: int = 10, mode: str = "hybrid") -> Hits:
        """The top ``k`` ``(docid, score)`` of one query, best first."""
        return self.searcher.search_batch(["q"], [query], (mode,), hits=k)[mode]["q"]

    def search_all(self, queries: dict[str, str], k: int = 1000, mode: str = "hybrid", batch_size: int = 64,
                   progress: bool = False) -> dict[str, Hits]:
        """A run ``{qid: [(docid, score), ...]}`` for ``{qid: text}``, searched in batches."""
        return self.searcher.search_all(queries, (mode,), hits=k, batch_size=batch_size, progress=progress)[mode]
