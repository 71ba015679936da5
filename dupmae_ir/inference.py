"""Encoding texts with a DupMAE model: dense vectors and bag-of-words weights from one forward pass.

- :class:`DupMAEEncoder`: ``encode_docs(texts)`` / ``encode_queries(texts)`` return an
  :class:`EncodedBatch` (dense vectors and integer impacts: documents cut to ``doc_topk`` entries,
  queries to ``query_topk`` if set, both quantised with their ``RetrieverConfig`` scales). DupMAE
  paper section 3.4: the dense part is ``h_hat = W^T h_cls``, the lexical part ``mu`` (eq. 7)
  max-pooled over ordinary tokens.
- :class:`ExactRetriever`: the same encoder over a corpus held in memory, scored exhaustively
  (dense matrix + sparse CSR matrix), for stage-2 mining and quick evaluation of small corpora.

Both batch through :meth:`DupMAEEncoder.batches`: texts are tokenised once, sorted by length, cut into
batches padded only to their own longest text, run under ``torch.inference_mode``, and returned in
the caller's order. Precisions (``dtype``): :mod:`dupmae_ir.precision`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
import torch

from .modeling.bow import packed_pool_pays, quantize, to_impact_dicts, topk_entries, topk_sparsify
from .modeling.retriever import DupMAERetriever, RetrieverConfig
from .precision import INT8, INT8_HEAD, default_device, dtype_name, resolve_dtype
from .runs import MODES, Run

log = logging.getLogger(__name__)



@dataclass
class EncodedBatch:
    """dense: (B, d) float32; impacts: one ``{token: int}`` per text; weights: (B, V) float before
    quantisation (top-k applied), kept only when asked for."""

    dense: np.ndarray
    impacts: list[dict[str, int]]
    weights: torch.Tensor | None = None


@dataclass
class DocArrays:
    """dense: (N, d) float32; ids: (N, k) vocabulary ids, ascending per row; weights: (N, k) int32 impacts
    (0 marks no entry)."""

    dense: np.ndarray
    ids: np.ndarray
    weights: np.ndarray


class DupMAEEncoder:
    """Encode texts with a DupMAE checkpoint (or any BERT masked LM / the default backbone)."""

    def __init__(self, model_name_or_path: str = "default", device: str = "cpu", dtype: str = "fp32",
                 config: RetrieverConfig | None = None):
        device = str(default_device()) if device == "auto" else device
        model, tokenizer = DupMAERetriever.from_pretrained(model_name_or_path, config=config)
        self._setup(model, tokenizer, device, resolve_dtype(dtype, device), str(model_name_or_path))

    @classmethod
    def from_model(cls, model: DupMAERetriever, tokenizer, device: str | torch.device | None = None,
                   dtype=torch.float32, name: str = "in-memory model") -> DupMAEEncoder:
        """Wrap a model already in memory (training, mining); ``dtype`` is a torch dtype or ``int8``."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, str(device or default_device()), dtype, name)
        return self

    def _setup(self, model, tokenizer, device: str, dtype, name: str) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.model_name_or_path = name
        self.device = device
        self.dtype = dtype
        self.model.to(device).eval()
        self.model.packed_pool = packed_pool_pays(device)  # CPU: max-pool without padding; GPU: padded batch
        # bf16/fp16: the entries an index keeps (top doc_topk) recomputed in fp32, selected in low precision
        low = dtype in (torch.bfloat16, torch.float16)
        self.model.exact_topk = max(model.config.doc_topk or 0, model.config.query_topk or 0) if low else 0
        if self.dtype in (INT8, INT8_HEAD):
            from torch.ao.quantization import quantize_dynamic

            if self.dtype == INT8:  # every nn.Linear (attention, feed-forward, MLM transform, D -> V decoder)
                self.model = quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
            else:  # the MLM head only (transform + D -> V decoder); encoder and dense projection stay fp32
                self.model.mlm.cls = quantize_dynamic(self.model.mlm.cls, {torch.nn.Linear}, dtype=torch.qint8)
        self.config = self.model.config
        self.vocab = self.tokenizer.convert_ids_to_tokens(list(range(self.model.mlm.config.vocab_size)))

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def with_lengths(self, query_max_length: int | None = None, doc_max_length: int | None = None) -> DupMAEEncoder:
        """This encoder (same model, shared) with other maximum lengths; ``None`` keeps the current one."""
        if query_max_length is None and doc_max_length is None:
            return self
        import copy

        for name, value in (("query_max_length", query_max_length), ("doc_max_length", doc_max_length)):
            if value is not None and value < 2:
                raise ValueError(f"{name}={value}: must be >= 2 ([CLS] and [SEP])")
        other = copy.copy(self)
        other.config = replace(self.config, **{k: v for k, v in (("query_max_length", query_max_length),
                                                               ("doc_max_length", doc_max_length)) if v is not None})
        return other

    # --- tokenisation --------------------------------------------------------------------------
    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids with [CLS] ... [SEP], truncated to ``max_length``, unpadded."""
        return self.tokenizer(list(texts), max_length=max_length, truncation=True, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _pad(self, ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Dynamic padding to the longest sequence of this batch -> input_ids, attention_mask (B, L) int64,
        built in numpy (one row copy each): host work, done ahead while the model runs (:meth:`prepare`)."""
        length = max(len(x) for x in ids)
        input_ids = np.full((len(ids), length), self.tokenizer.pad_token_id, dtype=np.int64)  # (B, L)
        mask = np.zeros((len(ids), length), dtype=np.int64)  # (B, L)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = x
            mask[i, :len(x)] = 1
        return input_ids, mask

    def prepare(self, texts: Sequence[str], max_length: int, batch_size: int | None,
                lengths: Sequence[int] | None = None) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
        """Tokenise ``texts`` once, sort them longest first (by token count, or by ``lengths``) and pad
        them into batches of ``batch_size``: ``[(rows, input_ids (b, L), attention_mask (b, L))]``.
        Host work only, so it can run in a thread while the model encodes the previous texts."""
        ids = self.tokenize(list(texts), max_length)
        lengths = lengths if lengths is not None else [len(x) for x in ids]
        # longest first: the first batch shows the peak memory at once; batches are padded per batch
        order = sorted(range(len(ids)), key=lambda i: -lengths[i])
        batch_size = batch_size or max(1, len(ids))
        return [(rows, *self._pad([ids[i] for i in rows]))
                for rows in (order[s:s + batch_size] for s in range(0, len(order), batch_size))]

    # --- forward -------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward_arrays(self, input_ids: np.ndarray, mask: np.ndarray, need_sparse: bool = True,
                       pooling: str = "cls") -> tuple[torch.Tensor, torch.Tensor | None]:
        """One forward pass over one padded batch -> dense (B, d), bow (B, V) or None, fp32 and on the
        encoder's device (top-k and quantisation then run there too: on a GPU only the k kept entries
        per text travel to the host). ``need_sparse=False`` skips the vocabulary head (``pooling``
        ``mean`` is the sentence-transformers baseline, dense only)."""
        cuda = self.device.startswith("cuda")
        input_ids, mask = ((torch.from_numpy(a).pin_memory() if cuda else torch.from_numpy(a))
                           .to(self.device, non_blocking=True) for a in (input_ids, mask))  # (B, L) each
        use_autocast = self.dtype in (torch.bfloat16, torch.float16)
        with torch.autocast(device_type=self.device.split(":")[0], dtype=self.dtype if use_autocast else None,
                            enabled=use_autocast):
            if need_sparse:
                dense, bow = self.model(input_ids, mask)  # (B, d), (B, V)
            else:
                dense, bow = self.model.encode_dense(input_ids, mask, pooling), None  # (B, d)
        return dense.float(), (bow.float() if bow is not None else None)

    def forward_ids(self, ids: list[list[int]], need_sparse: bool = True,
                    pooling: str = "cls") -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`forward_arrays` of unpadded token ids."""
        return self.forward_arrays(*self._pad(ids), need_sparse, pooling)

    def batches(self, texts: Sequence[str], max_length: int, batch_size: int | None, need_sparse: bool = True,
                pooling: str = "cls", lengths: Sequence[int] | None = None, progress: str | None = None,
                prepared: list | None = None):
        """Yield ``(rows, dense (b, d), bow (b, V) or None)`` over ``texts`` in batches of ``batch_size``,
        longest first (by token count, or by ``lengths`` when given); ``rows`` index into ``texts``.
        ``prepared``: the batches of :meth:`prepare`, made ahead."""
        from tqdm import tqdm

        prepared = prepared if prepared is not None else self.prepare(texts, max_length, batch_size, lengths)
        for rows, input_ids, mask in tqdm(prepared, desc=progress, disable=progress is None, unit="batch"):
            dense, bow = self.forward_arrays(input_ids, mask, need_sparse, pooling)
            yield rows, dense, bow

    def _encode(self, texts: list[str], max_length: int, topk: int | None, scale: float,
                keep_weights: bool, batch_size: int | None, min_weight: float = 0.0) -> EncodedBatch:
        dense = np.zeros((len(texts), self.model.dense_dim), dtype=np.float32)  # (N, d)
        impacts: list[dict[str, int] | None] = [None] * len(texts)
        weights_all = torch.zeros(len(texts), len(self.vocab)) if keep_weights else None  # (N, V)
        for rows, d, bow in self.batches(texts, max_length, batch_size):
            weights = topk_sparsify(bow, topk)  # (b, V)
            if min_weight > 0:
                weights = weights * (weights >= min_weight)  # (b, V) light terms dropped (query pruning)
            dense[rows] = d.cpu().numpy()
            for i, row in zip(rows, to_impact_dicts(quantize(weights, scale).cpu(), self.vocab)):
                impacts[i] = row
            if weights_all is not None:
                weights_all[rows] = weights.cpu()
        return EncodedBatch(dense, impacts, weights_all)

    def encode_doc_arrays(self, texts: list[str], batch_size: int | None = None,
                          prepared: list | None = None) -> DocArrays:
        """Documents as arrays, for indexing: dense (N, d) float32 and each text's top ``doc_topk``
        bag-of-words entries, quantised with ``doc_scale``, as vocabulary ids (N, k) sorted ascending with
        their integer weights (N, k) (0 = no entry). The same values as :meth:`encode_docs`, without a
        per-token Python dictionary; top-k and quantisation run on the encoder's device. ``prepared``:
        :meth:`prepare` of ``texts`` at ``doc_max_length``, made ahead."""
        c = self.config
        k = min(c.doc_topk or self.model.mlm.config.vocab_size, self.model.mlm.config.vocab_size)
        dense = np.zeros((len(texts), self.model.dense_dim), dtype=np.float32)  # (N, d)
        ids = np.zeros((len(texts), k), dtype=np.int32)  # (N, k)
        weights = np.zeros((len(texts), k), dtype=np.int32)  # (N, k)
        for rows, d, bow in self.batches(texts, c.doc_max_length, batch_size, prepared=prepared):
            values, index = topk_entries(bow, k)  # (b, k), (b, k)
            values = quantize(values, c.doc_scale).clamp_(min=0)  # (b, k) int32
            order = index.argsort(dim=1)  # (b, k): vocabulary order, as the dictionaries of encode_docs
            dense[rows] = d.cpu().numpy()
            ids[rows] = index.gather(1, order).to(torch.int32).cpu().numpy()
            weights[rows] = values.gather(1, order).cpu().numpy()
        return DocArrays(dense, ids, weights)

    def encode_docs(self, texts: list[str], keep_weights: bool = False, batch_size: int | None = None) -> EncodedBatch:
        """Documents: ``doc_max_length``, top ``doc_topk`` entries, scale ``doc_scale``. With
        ``batch_size`` the texts are length-sorted into batches (results in the given order)."""
        c = self.config
        return self._encode(texts, c.doc_max_length, c.doc_topk, c.doc_scale, keep_weights, batch_size)

    def encode_queries(self, texts: list[str], keep_weights: bool = False,
                       batch_size: int | None = None) -> EncodedBatch:
        """Queries: ``query_max_length``, ``query_topk`` (None keeps all), weights below
        ``query_min_weight`` dropped, scale ``query_scale``."""
        c = self.config
        return self._encode(texts, c.query_max_length, c.query_topk, c.query_scale, keep_weights, batch_size,
                            c.query_min_weight)


class ExactRetriever:
    """Encode documents once with a :class:`~dupmae_ir.modeling.retriever.DupMAERetriever`, then score
    queries exhaustively: ``dense`` (h_q . h_d), ``impact`` (mu_q . topk(mu_d)), ``hybrid`` (their
    sum, weighted by ``dense_weight``/``sparse_weight``): what an encode + hybrid search scores, in
    floating point (the impact index stores integer ``round(mu * s)``).

    ``device``: where the model runs and the document matrices live (default: :func:`default_device`).
    ``dtype``: the encoder's compute dtype (``torch.bfloat16`` / ``torch.float16``: autocast, as
    ``encode --dtype``; default fp32). Scores are fp32 on every device. For corpora that do not fit in
    memory, search an index of ``python -m dupmae_ir.encode`` instead."""

    def __init__(self, model, tokenizer, doc_max_length: int | None = None, query_max_length: int | None = None,
                 doc_topk: int | None = None, query_topk: int | None = None, batch_size: int = 32,
                 need_sparse: bool = True, pooling: str = "cls", device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype={dtype}; valid: torch.float32, torch.bfloat16, torch.float16")
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
        self.batch_size = batch_size
        self.need_sparse = need_sparse
        self.pooling = pooling
        self.doc_ids: list[str] = []
        self.dense: torch.Tensor | None = None  # (N, d)
        self.sparse: torch.Tensor | None = None  # (N, V) sparse CSR

    def _encode(self, texts: Sequence[str], max_length: int, topk: int | None, progress: str | None = None,
                min_weight: float = 0.0):
        """-> (order, dense (n, d), sparse CSR (n, V) or None), rows in ``order`` (longest first)."""
        order, dense_parts, sparse_parts = [], [], []
        # character lengths order the batches: the batches, and so the bf16 results, of earlier versions
        for rows, dense, bow in self.encoder.batches(texts, max_length, self.batch_size, self.need_sparse,
                                                     self.pooling, [len(t) for t in texts], progress):
            order += rows
            dense_parts.append(dense)
            if bow is not None:
                weights = topk_sparsify(bow, topk)  # (b, V)
                if min_weight > 0:
                    weights = weights * (weights >= min_weight)
                sparse_parts.append(weights.to_sparse_csr())  # (b, V)
        sparse = _cat_csr(sparse_parts) if self.need_sparse else None
        return order, torch.cat(dense_parts), sparse

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], progress: bool = True) -> ExactRetriever:
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
                                                    self.query_topk, min_weight=self.query_min_weight)
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
