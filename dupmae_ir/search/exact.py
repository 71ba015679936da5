"""Exhaustive search in memory: every document scored against every query, in floating point.

:class:`ExactSearcher` encodes a corpus once with :class:`~dupmae_ir.inference.DupMAEEncoder` (dense
matrix + sparse CSR matrix) and scores queries against all of it: the score an encode + hybrid search
computes, without an index or quantisation. For stage-2 mining and quick evaluation of small corpora;
an index of ``python -m dupmae_ir.encode`` and :class:`~dupmae_ir.search.searcher.DupMAESearcher` serve
larger ones.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from ..inference import DupMAEEncoder
from ..modeling.bow import sparsify
from ..precision import FLOAT_DTYPES
from ..runs import MODES, Run


class ExactSearcher:
    """Encode documents once with a :class:`~dupmae_ir.modeling.model.DupMAEModel`, then score
    queries exhaustively: ``dense`` (h_q . h_d), ``impact`` (mu_q . topk(mu_d)), ``hybrid`` (their
    sum, weighted by ``dense_weight``/``sparse_weight``): what an encode + hybrid search scores, in
    floating point (the impact index stores integer ``round(mu * s)``).

    ``device``: where the model runs and the document matrices live (default: :func:`default_device`).
    ``dtype``: the encoder's precision, a name of :data:`~dupmae_ir.precision.FLOAT_DTYPES` (``bf16`` /
    ``fp16``: autocast, as ``encode --dtype``; default fp32). Scores are fp32 on every device. For
    corpora that do not fit in memory, search an index of ``python -m dupmae_ir.encode`` instead."""

    def __init__(self, model, tokenizer, doc_max_length: int | None = None, query_max_length: int | None = None,
                 doc_topk: int | None = None, query_topk: int | None = None, batch_size: int = 32,
                 need_sparse: bool = True, pooling: str = "cls", device: str | torch.device | None = None,
                 dtype: str = "fp32", query_terms: str | None = None):
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"dtype={dtype!r}; valid: {FLOAT_DTYPES}")
        if pooling != "cls" and need_sparse:
            raise ValueError("pooling='mean' is a dense-only baseline: pass need_sparse=False")
        self.encoder = DupMAEEncoder.from_model(model, tokenizer, device, dtype)
        self.device = torch.device(self.encoder.device)
        self.dtype = dtype
        cfg = model.config
        self.doc_max_length = doc_max_length or cfg.doc_max_length
        self.query_max_length = query_max_length or cfg.query_max_length
        self.doc_topk = cfg.doc_topk if doc_topk is None else doc_topk
        self.query_topk = cfg.query_topk if query_topk is None else query_topk
        self.query_min_weight = cfg.query_min_weight
        self.query_terms = query_terms or cfg.query_terms  # "own": queries weight only their own pieces
        self.batch_size = batch_size
        self.need_sparse = need_sparse
        self.pooling = pooling
        self.doc_ids: list[str] = []
        self.dense: torch.Tensor | None = None  # (N, d)
        self.sparse: torch.Tensor | None = None  # (N, V) sparse CSR

    def _encode(self, texts: Sequence[str], max_length: int, topk: int | None, progress: str | None = None,
                min_weight: float = 0.0, own_pieces: bool = False):
        """-> (order, dense (n, d), sparse CSR (n, V) or None), rows in ``order`` (longest first)."""
        order, dense_parts, sparse_parts = [], [], []
        # character lengths order the batches: the batches, and so the bf16 results, of earlier versions
        for rows, dense, bow in self.encoder.batches(texts, max_length, self.batch_size, self.need_sparse,
                                                     self.pooling, [len(t) for t in texts], progress,
                                                     own_pieces=own_pieces):
            order += rows
            dense_parts.append(dense)
            if bow is not None:
                weights = sparsify(bow, topk, min_weight)  # (b, V)
                sparse_parts.append(weights.to_sparse_csr())  # (b, V)
        sparse = _cat_csr(sparse_parts) if self.need_sparse else None
        return order, torch.cat(dense_parts), sparse

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], progress: bool = True) -> ExactSearcher:
        order, self.dense, self.sparse = self._encode(list(texts), self.doc_max_length, self.doc_topk,
                                                      "encode docs" if progress else None)
        self.doc_ids = [str(doc_ids[i]) for i in order]  # rows are held in encoding order
        return self

    @torch.inference_mode()
    def search(self, queries: dict[str, str], k: int = 1000, modes: Iterable[str] = MODES,
               dense_weight: float = 1.0, sparse_weight: float = 1.0, batch_size: int = 128) -> dict[str, Run]:
        """``{mode: {qid: [(docid, score), ...]}}`` best first, exhaustive over the indexed documents."""
        modes = tuple(modes)
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f"modes {bad}; valid: {MODES}")
        if not self.need_sparse and any(m != "dense" for m in modes):
            raise ValueError("this searcher was built with need_sparse=False: only mode 'dense' is available")
        qids = list(queries)
        runs: dict[str, Run] = {m: {} for m in modes}
        k = min(k, len(self.doc_ids))
        for start in range(0, len(qids), batch_size):
            chunk = qids[start:start + batch_size]
            order, q_dense, q_sparse = self._encode([queries[q] for q in chunk], self.query_max_length,
                                                    self.query_topk, min_weight=self.query_min_weight,
                                                    own_pieces=self.query_terms == "own")
            chunk = [chunk[i] for i in order]
            dense = q_dense @ self.dense.T  # (b, N)
            sparse = (self.sparse @ q_sparse.to_dense().T).T if self.need_sparse else None  # (b, N)
            for mode in modes:
                if mode == "dense":
                    scores = dense
                elif mode == "impact":
                    scores = sparse
                else:
                    scores = dense_weight * dense + sparse_weight * sparse  # (b, N)
                top = scores.topk(k, dim=1)
                for row, qid in enumerate(chunk):
                    runs[mode][qid] = [(self.doc_ids[j], float(s))
                                       for s, j in zip(top.values[row].tolist(), top.indices[row].tolist())]
        return runs


def _cat_csr(parts: list[torch.Tensor]) -> torch.Tensor:
    """Stack CSR matrices (n_i, V) row-wise -> (sum n_i, V)."""
    crow, col, val, offset = [parts[0].crow_indices()[:1]], [], [], 0
    for p in parts:
        crow.append(p.crow_indices()[1:] + offset)
        col.append(p.col_indices())
        val.append(p.values())
        offset += p.values().numel()
    n = sum(p.shape[0] for p in parts)
    return torch.sparse_csr_tensor(torch.cat(crow), torch.cat(col), torch.cat(val), (n, parts[0].shape[1]))
