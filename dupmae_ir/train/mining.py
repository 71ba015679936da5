"""Exhaustive in-memory retrieval with a DupMAE model, for hard-negative mining (stage 2) and for
quick evaluation of corpora that fit in memory (SciFact: 5k documents).

It scores exactly what an encode + hybrid search of the toolkit scores (paper section 3.4):
``dense_q . dense_d + mu_q . topk(mu_d)``, but in floating point (the impact index stores integer
``round(mu * s)``), with documents held as a dense (N, d) matrix and a sparse CSR (N, V) matrix.
For collections that do not fit in memory (MS MARCO), mine from an index written by
``python -m dupmae_ir.encode`` instead (``--mine-index``; :func:`mine_from_index`).
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Sequence

import torch

from ..modeling.bow import packed_pool_pays

log = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]
MODES = ("dense", "impact", "hybrid")


def default_device() -> torch.device:
    """This process's GPU when there is one (``LOCAL_RANK`` under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return torch.device("cpu")


class ExactRetriever:
    """Encode documents once with a :class:`~dupmae_ir.modeling.retriever.DupMAERetriever`, then score
    queries exhaustively: ``dense`` (h_q . h_d), ``impact`` (mu_q . topk(mu_d)), ``hybrid`` (their
    sum, weighted by ``dense_weight``/``sparse_weight``).

    ``device``: where the model runs and the document matrices live (default: :func:`default_device`,
    the GPU when there is one). ``dtype``: the encoder's compute dtype (``torch.bfloat16`` /
    ``torch.float16``: autocast, as ``encode --dtype``; default fp32). Scores are fp32 on every device."""

    def __init__(self, model, tokenizer, doc_max_length: int | None = None, query_max_length: int | None = None,
                 doc_topk: int | None = None, query_topk: int | None = None, batch_size: int = 32,
                 need_sparse: bool = True, pooling: str = "cls", device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32):
        self.device = torch.device(device) if device is not None else default_device()
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype={dtype}; valid: torch.float32, torch.bfloat16, torch.float16")
        self.dtype = dtype
        self.model = model.to(self.device).eval()
        self.model.packed_pool = packed_pool_pays(self.device)  # same values; the faster path per device
        self.tokenizer = tokenizer
        cfg = model.config
        self.doc_max_length = doc_max_length or cfg.doc_max_length
        self.query_max_length = query_max_length or cfg.query_max_length
        self.doc_topk = cfg.doc_topk if doc_topk is None else doc_topk
        self.query_topk = cfg.query_topk if query_topk is None else query_topk
        self.batch_size = batch_size
        self.need_sparse = need_sparse
        self.pooling = pooling
        if pooling != "cls" and need_sparse:
            raise ValueError("pooling='mean' is a dense-only baseline: pass need_sparse=False")
        self.doc_ids: list[str] = []
        self.dense: torch.Tensor | None = None  # (N, d)
        self.sparse: torch.Tensor | None = None  # (N, V) sparse CSR

    @torch.inference_mode()
    def _encode(self, texts: Sequence[str], max_length: int, topk: int | None, progress: str | None = None):
        """-> (order, dense (n, d), sparse CSR (n, V) or None), rows in ``order`` (length-sorted)."""
        from tqdm import tqdm

        from ..modeling.bow import topk_sparsify

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # length-sorted: less padding
        dense_parts, sparse_parts = [], []
        for start in tqdm(range(0, len(order), self.batch_size), desc=progress, disable=progress is None,
                          unit="batch"):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], max_length=max_length, truncation=True,
                                 padding=True, return_tensors="pt").to(self.device)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                if self.need_sparse:
                    dense, bow = self.model(enc["input_ids"], enc["attention_mask"])  # (b, d), (b, V)
                    sparse_parts.append(topk_sparsify(bow.float(), topk).to_sparse_csr())  # (b, V)
                else:
                    dense = dense_only(self.model, enc["input_ids"], enc["attention_mask"], self.pooling)  # (b, d)
            dense_parts.append(dense.float())
        sparse = _cat_csr(sparse_parts) if self.need_sparse else None
        return order, torch.cat(dense_parts), sparse

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], progress: bool = True) -> "ExactRetriever":
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
            raise ValueError("this retriever was built with need_sparse=False: only mode 'dense' is available")
        qids = list(queries)
        runs: dict[str, Run] = {m: {} for m in modes}
        k = min(k, len(self.doc_ids))
        for start in range(0, len(qids), batch_size):
            chunk = qids[start:start + batch_size]
            order, q_dense, q_sparse = self._encode([queries[q] for q in chunk], self.query_max_length,
                                                    self.query_topk)
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


POOLINGS = ("cls", "mean")


def dense_only(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "cls") -> torch.Tensor:
    """The dense part of :class:`DupMAERetriever` alone (skips the vocabulary projection): (B, d').

    ``pooling="mean"`` (masked mean of the last layer, L2-normalised, no projection) is not DupMAE's
    representation: it is the native pooling of sentence-transformers backbones such as
    all-MiniLM-L6-v2 (Pooling(mean) + Normalize), used for their zero-shot baseline.
    """
    hidden = model.mlm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
    if pooling == "mean":
        mask = attention_mask[..., None].to(hidden.dtype)  # (B, L, 1)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, D)
        return torch.nn.functional.normalize(mean, dim=-1)  # (B, D): cosine, as the ST model scores
    if pooling != "cls":
        raise ValueError(f"pooling={pooling!r}; valid: {POOLINGS}")
    h_cls = hidden[:, 0]  # (B, D)
    return model.projection(h_cls) if model.projection is not None else h_cls  # (B, d')


def _cat_csr(parts: list[torch.Tensor]) -> torch.Tensor:
    crow, col, val, offset = [parts[0].crow_indices()[:1]], [], [], 0
    for p in parts:
        crow.append(p.crow_indices()[1:] + offset)
        col.append(p.col_indices())
        val.append(p.values())
        offset += p.values().numel()
    n = sum(p.shape[0] for p in parts)
    return torch.sparse_csr_tensor(torch.cat(crow), torch.cat(col), torch.cat(val), (n, parts[0].shape[1]))


def negatives_from_run(run: Run, qrels: dict[str, dict[str, int]], depth: int, skip: int = 0) -> dict[str, list[str]]:
    """Hard negatives: each query's top-``depth`` hits with its judged positives (rel > 0) removed,
    after skipping the first ``skip`` non-positive hits (a guard against unjudged positives)."""
    out = {}
    for qid, hits in run.items():
        positives = {d for d, r in qrels.get(qid, {}).items() if r > 0}
        negs = [d for d, _ in hits[:depth] if d not in positives]
        out[qid] = negs[skip:]
    return out


def mine_from_index(index_dir: str | os.PathLike, queries: dict[str, str], depth: int, mode: str = "hybrid",
                    encoder: str | None = None) -> Run:
    """Top-``depth`` hits of each query from an index of ``python -m dupmae_ir.encode`` (the toolkit's
    Pyserini retrieval: FAISS + Lucene impact), for corpora too large for :class:`ExactRetriever`."""
    from ..search import DupMAESearcher

    searcher = DupMAESearcher(index_dir, encoder=encoder)
    return searcher.search_all(queries, modes=(mode,), hits=depth)[mode]
