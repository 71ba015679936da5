"""The DupMAE searcher: dense (FAISS), impact (Lucene) and hybrid search over one index folder."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from ..index import check_lucene_count, check_query_encoder, load_encoded_queries, load_index
from ..runs import HYBRID_BM25, MODES, SEARCH_MODES, FusionConfig, Run, fuse, fuse_normalize, rank_hits


@dataclass(frozen=True)
class PartHit:
    """A hit with the score of each side (:meth:`DupMAESearcher.search_parts`)."""

    docid: str
    rank: int
    score: float  # the mode's score (fused for hybrid)
    dense: float | None  # h_q . h_d, None when outside the dense top-depth
    sparse: float | None  # mu_q . mu_d de-quantised (impact * alpha), None when outside the impact top-depth
    impact: int | None  # Lucene's integer impact score


def query_encoder(info, encoder: str | None = None, device: str = "cpu", dtype: str = "fp32",
                  query_max_length: int | None = None, query_topk: int | None = None,
                  query_min_weight: float | None = None, query_terms: str | None = None):
    """The :class:`~dupmae_ir.inference.DupMAEEncoder` that encodes queries for the index ``info``
    (:class:`~dupmae_ir.index.IndexInfo`): the checkpoint ``encoder`` (default: the index's), with the
    index's scales, top-k and activation, and these query-side overrides."""
    from ..inference import DupMAEEncoder
    from ..modeling.backbone import resolve_model_path
    from ..modeling.model import RepresentationConfig

    name = encoder or info.encoder
    path = resolve_model_path(name)
    config = RepresentationConfig.load(path) if Path(path).is_dir() else RepresentationConfig()
    config = replace(config, **info.retriever)  # the index's scales/top-k/activation win
    overrides = {"query_max_length": query_max_length, "query_topk": query_topk, "query_min_weight": query_min_weight,
                 "query_terms": query_terms}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    return DupMAEEncoder(name, device=device, dtype=dtype, config=config)


class DupMAESearcher:
    """Dense, impact and hybrid search over one encode output folder.

    The index is checked first (:func:`dupmae_ir.index.load_index`: provenance, FAISS/docid/Lucene
    counts), before the JVM or the model start. Queries are encoded once per batch by
    :class:`dupmae_ir.inference.DupMAEEncoder` (dense vector and integer impacts in one forward pass)
    with the scales, top-k and activation stored in the index; FAISS (read directly, as Pyserini's
    ``FaissSearcher`` does) and Lucene (:class:`~dupmae_ir.search.lucene.ImpactSearcher`: Anserini's
    impact scoring with Lucene's top-k pruning) then search the batch with ``threads`` threads. Java
    hits become Python tuples at once (millions of live Java objects exhaust the JVM heap).
    """

    def __init__(self, index_dir: str | os.PathLike, encoder: str | None = None, threads: int = 1,
                 device: str = "cpu", dtype: str = "fp32", min_idf: float = -1,
                 encoded_queries: str | os.PathLike | None = None, query_max_length: int | None = None,
                 query_topk: int | None = None, query_min_weight: float | None = None,
                 bm25_index: str | os.PathLike | None = None, bm25_k1: float = 0.9, bm25_b: float = 0.4,
                 ef_search: int | None = None, nprobe: int | None = None, allow_other_encoder: bool = False,
                 query_terms: str | None = None):
        """``query_max_length``, ``query_topk``, ``query_min_weight``, ``query_terms``: query-side settings
        for this searcher (default: the checkpoint's length, the index's top-k, minimum weight and terms).
        ``ef_search`` (HNSW indexes) and ``nprobe`` (IVF indexes): FAISS search-time knobs (default 128
        and 32, :func:`~dupmae_ir.dense_index.apply_search_knobs`); the values in force are
        :attr:`dense_search` (recorded in run provenance).
        ``encoded_queries`` made by another checkpoint than the index's are refused unless
        ``allow_other_encoder`` (:func:`dupmae_ir.index.check_query_encoder`).
        ``bm25_index``: a Lucene BM25 index of the same collection (``python -m dupmae_ir.bm25`` or
        Pyserini's), searched with BM25(``bm25_k1``, ``bm25_b``) for mode ``hybrid+bm25``."""
        import faiss

        self.info = load_index(index_dir)
        # pre-encoded queries (encode_queries' folder) replace live encoding: the same inputs as stock
        # Pyserini's --encoded-queries / impact --encoder *.jsonl, so runs match bit for bit
        self.encoded = load_encoded_queries(encoded_queries) if encoded_queries else None
        if self.encoded is not None and not allow_other_encoder:
            check_query_encoder(self.encoded, self.info)
        self.threads = threads
        self.min_idf = min_idf
        # seconds spent per stage and queries searched, summed over calls (bench/latency.py reads them)
        self.timings = dict.fromkeys(("encode", "faiss", "lucene", "bm25", "fusion", "queries"), 0.0)
        self.faiss_index = self.docids = self.dense_search = None
        if self.info.dense is None and (ef_search, nprobe) != (None, None):
            from ..errors import UserError

            raise UserError("--ef-search" if ef_search is not None else "--nprobe",
                            f"{self.info.root} has no dense index (built with --impact-only)", "drop the flag")
        if self.info.dense is not None:
            from ..dense_index import apply_search_knobs, index_kind

            self.faiss_index = faiss.read_index(str(self.info.dense / "index"))
            self.dense_search = apply_search_knobs(self.faiss_index, ef_search, nprobe, self.info.dense / "index",
                                                   index_kind(self.faiss_index, self.info.meta))
            with open(self.info.dense / "docid", encoding="utf-8") as fh:
                self.docids = [line.rstrip("\n") for line in fh]
        self.impact_searcher = None
        if self.info.impact is not None:
            from ..java import raise_max_clause_count
            from .lucene import ImpactSearcher

            # min_idf=-1 keeps every query token the index holds: the exact dot product. Pyserini's
            # default 0 drops tokens present in every document (idf 0), which changes DupMAE's score.
            self.impact_searcher = ImpactSearcher(str(self.info.impact), min_idf=min_idf)
            check_lucene_count(self.info, self.impact_searcher.num_docs)
            raise_max_clause_count()
        self.bm25 = None
        if bm25_index is not None:
            from ..bm25 import BM25Searcher

            self.bm25 = BM25Searcher(bm25_index, bm25_k1, bm25_b, threads)
        self.encoder_name = encoder or self.info.encoder
        self.encoder = query_encoder(self.info, self.encoder_name, device, dtype, query_max_length, query_topk,
                                     query_min_weight, query_terms)
        dim = self.encoder.model.dense_dim
        if self.faiss_index is not None and self.encoded is None and dim != self.faiss_index.d:
            from ..errors import UserError

            raise UserError("--encoder", f"{self.encoder_name} gives {dim}-d dense vectors but {self.info.dense} holds "
                                         f"{self.faiss_index.d}-d ones", "pass the encoder the index was built with "
                                                                         "(default: the one the index records)")

    @property
    def size(self) -> int:
        """Documents in the index (the most hits a query can have)."""
        if self.info.docs > 0:
            return self.info.docs
        return max(self.faiss_index.ntotal if self.faiss_index is not None else 0,
                   self.impact_searcher.num_docs if self.impact_searcher is not None else 0)

    @property
    def alpha(self) -> float:
        return self.info.alpha

    @property
    def query_encoder(self) -> str:
        """The checkpoint that made this searcher's query representations: the pre-encoded queries'
        (their provenance), else the live encoder."""
        if self.encoded is not None:
            return str(self.encoded.meta.get("encoder", f"unknown (pre-encoded in {self.encoded.folder})"))
        return self.encoder_name

    def _dense_search(self, vectors, k: int) -> list[list[tuple[str, float]]]:
        """FAISS search of (B, d) vectors with ``threads`` threads; torch's thread count is restored
        (FAISS and torch share one OpenMP runtime)."""
        import faiss
        import numpy as np
        import torch

        torch_threads = torch.get_num_threads()
        faiss.omp_set_num_threads(self.threads)
        try:
            scores, rows = self.faiss_index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)  # (B, k)
        finally:
            torch.set_num_threads(torch_threads)
        return [[(self.docids[r], float(s)) for r, s in zip(row, score) if r >= 0]
                for row, score in zip(rows.tolist(), scores.tolist())]

    def _require(self, modes: Sequence[str]) -> None:
        bad = [m for m in modes if m not in SEARCH_MODES]
        if bad:
            raise ValueError(f"modes {bad}; valid: {SEARCH_MODES}")
        from ..errors import IndexFormatError, UserError

        if HYBRID_BM25 in modes and self.bm25 is None:
            raise UserError("--mode hybrid+bm25", "needs a BM25 index of the same collection",
                            "pass --bm25-index DIR (built by `python -m dupmae_ir.bm25 --corpus C --index DIR`)")
        modes = tuple("hybrid" if m == HYBRID_BM25 else m for m in modes)
        if self.faiss_index is None and any(m in ("dense", "hybrid") for m in modes):
            raise IndexFormatError(self.info.root, "was built with --impact-only: no dense index for modes "
                                                   f"{list(modes)}", "search with --mode impact")
        if self.impact_searcher is None and any(m in ("impact", "hybrid") for m in modes):
            raise IndexFormatError(self.info.root, "was built with --dense-only: no impact index for modes "
                                                   f"{list(modes)}", "search with --mode dense")

    def encode_batch(self, texts: Sequence[str]):
        """The queries' dense vectors and impacts: pre-encoded when ``encoded_queries`` was given, else live."""
        return self.encoded.batch(list(texts)) if self.encoded else self.encoder.encode_queries(list(texts))

    def search_batch(self, qids: Sequence[str], texts: Sequence[str], modes: Iterable[str] = MODES,
                     hits: int = 1000, depth: int | None = None, fusion: FusionConfig = FusionConfig(),
                     drop_query_id: bool = False, encoded=None) -> dict[str, Run]:
        """Search one batch; returns ``{mode: {qid: [(docid, score), ...]}}``.

        ``depth`` (default ``hits``) is how many hits each side contributes to hybrid fusion
        (Pyserini's ``fusion --hits``). ``drop_query_id`` removes a hit whose docid equals its qid
        (BEIR's convention on ArguAna and Quora) before cutting to ``hits``. ``hybrid+bm25`` fuses the
        hybrid top ``depth`` with the BM25 top ``depth`` as ``pyserini.fusion --method normalize`` does
        (:func:`~dupmae_ir.runs.fuse_normalize`).
        ``encoded``: the batch's
        :class:`~dupmae_ir.inference.EncodedBatch` when the caller has it already (an explainer does).
        """
        modes = tuple(modes)
        self._require(modes)
        # no side can return more hits than the index holds: FAISS and Lucene allocate k per query up front
        hits, depth = min(hits, self.size), min(depth or hits, self.size)
        extra = 1 if drop_query_id else 0
        qids, texts = [str(q) for q in qids], list(texts)
        clock = time.perf_counter()
        # dense (B, d), impacts [{tok: int}]
        enc = encoded if encoded is not None else self.encode_batch(texts)
        clock = self._tick("encode", clock)
        fused = "hybrid" in modes or HYBRID_BM25 in modes
        need_dense = "dense" in modes or fused
        need_sparse = "impact" in modes or fused
        k_dense = max(hits if "dense" in modes else 0, depth if fused else 0) + extra
        k_sparse = max(hits if "impact" in modes else 0, depth if fused else 0) + extra
        dense_run = sparse_run = None
        if need_dense:
            dense_run = dict(zip(qids, self._dense_search(enc.dense, k_dense)))
            clock = self._tick("faiss", clock)
        if need_sparse:
            sparse_run = dict(zip(qids, self.impact_searcher.batch_search(enc.impacts, k_sparse, self.threads)))
            clock = self._tick("lucene", clock)
        if drop_query_id:
            dense_run = dense_run and {q: [h for h in v if h[0] != q] for q, v in dense_run.items()}
            sparse_run = sparse_run and {q: [h for h in v if h[0] != q] for q, v in sparse_run.items()}
        out: dict[str, Run] = {}
        if "dense" in modes:
            out["dense"] = {q: rank_hits(dict(dense_run[q]), hits) for q in qids}
        if "impact" in modes:
            out["impact"] = {q: rank_hits(dict(sparse_run[q]), hits) for q in qids}
        if fused:
            alpha = fusion.alpha_for(self.alpha)
            k_fused = max(hits if "hybrid" in modes else 0, depth if HYBRID_BM25 in modes else 0)
            hybrid = {q: fuse(dense_run[q][:depth], sparse_run[q][:depth], k_fused, fusion.fusion, alpha,
                              fusion.weight_on_dense, fusion.rrf_k) for q in qids}
            if "hybrid" in modes:
                out["hybrid"] = {q: hybrid[q][:hits] for q in qids}
        clock = self._tick("fusion", clock)
        if HYBRID_BM25 in modes:
            bm25 = self.bm25.search(dict(zip(qids, texts)), depth, batch_size=len(qids),
                                    drop_query_id=drop_query_id, progress=False)
            clock = self._tick("bm25", clock)
            out[HYBRID_BM25] = {q: fuse_normalize([hybrid[q][:depth], bm25.get(q, [])], hits) for q in qids}
            self._tick("fusion", clock)
        self.timings["queries"] += len(qids)
        return out

    def _tick(self, stage: str, since: float) -> float:
        """Add the time since ``since`` to ``stage`` in :attr:`timings`; return now."""
        now = time.perf_counter()
        self.timings[stage] += now - since
        return now

    def search_parts(self, text: str, k: int = 10, mode: str = "hybrid", depth: int = 1000,
                     fusion: FusionConfig = FusionConfig(), encoded=None) -> list[PartHit]:
        """One query's top ``k`` in ``mode``, each hit with the scores of both sides: ``dense`` (inner
        product) and ``sparse`` (de-quantised impact score, Lucene's integer score ``impact`` times
        ``alpha``) when the document is in that side's top ``depth``, else None (hybrid fusion then
        gives it that side's minimum, as Pyserini does). ``hybrid+bm25``: the score is the fusion's, the
        sides are the model's. ``encoded``: as in :meth:`search_batch`."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode={mode!r}; valid: {SEARCH_MODES}")
        depth = max(k, depth)
        sides = tuple(m for m in ("dense", "impact") if (self.faiss_index if m == "dense" else self.impact_searcher))
        modes = tuple(dict.fromkeys((*sides, mode)))
        runs = self.search_batch(["q"], [text], modes, hits=depth, depth=depth, fusion=fusion, encoded=encoded)
        dense = dict(runs["dense"]["q"]) if "dense" in runs else {}
        impact = dict(runs["impact"]["q"]) if "impact" in runs else {}
        return [PartHit(docid, rank, score, dense.get(docid),
                        impact[docid] * self.alpha if docid in impact else None,
                        int(impact[docid]) if docid in impact else None)
                for rank, (docid, score) in enumerate(runs[mode]["q"][:k], start=1)]

    def search_all(self, queries: dict[str, str], modes: Iterable[str] = MODES, hits: int = 1000,
                   depth: int | None = None, fusion: FusionConfig = FusionConfig(), batch_size: int = 64,
                   drop_query_id: bool = False, progress: bool = True) -> dict[str, Run]:
        """Search every query (``{qid: text}``) in batches of ``batch_size``, with a progress bar."""
        from tqdm import tqdm

        modes = tuple(modes)
        self._require(modes)
        runs: dict[str, Run] = {m: {} for m in modes}
        items = list(queries.items())
        with tqdm(total=len(items), desc="search", unit="q", disable=not progress) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                part = self.search_batch([q for q, _ in chunk], [t for _, t in chunk], modes, hits, depth,
                                         fusion, drop_query_id)
                for m in modes:
                    runs[m].update(part[m])
                bar.update(len(chunk))
        return runs
