"""Inference with a DupMAE model: dense vectors and bag-of-words weights from one forward pass.

:class:`DupMAEEncoder`: ``encode_docs(texts)`` / ``encode_queries(texts)`` return an
:class:`EncodedBatch` (dense vectors and integer impacts: documents cut to ``doc_topk`` entries,
queries to ``query_topk`` if set, both quantised with their ``RepresentationConfig`` scales). DupMAE
paper section 3.4: the dense part is ``h_hat = W^T h_cls``, the lexical part ``mu`` (eq. 7)
max-pooled over ordinary tokens. Every caller (indexing, query encoding, the exhaustive
:class:`~dupmae_ir.search.exact.ExactSearcher`) batches through :meth:`DupMAEEncoder.batches`: texts
are tokenised once, sorted by length, cut into batches padded only to their own longest text, run
under ``torch.inference_mode``, and returned in the caller's order. Precisions (``dtype``, a name):
:mod:`dupmae_ir.precision`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from .modeling.bow import (
    grounded_share,
    keep_own_pieces,
    packed_pool_pays,
    quantize,
    sparsify,
    to_impact_dicts,
    topk_entries,
)
from .modeling.model import DupMAEModel, PoolingPlan, RepresentationConfig
from .precision import DTYPES, INT8, INT8_HEAD, autocast_dtype, default_device, resolve_dtype

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
                 config: RepresentationConfig | None = None):
        device = str(default_device()) if device == "auto" else device
        model, tokenizer = DupMAEModel.from_pretrained(model_name_or_path, config=config)
        self._setup(model, tokenizer, device, resolve_dtype(dtype, device), str(model_name_or_path))

    @classmethod
    def from_model(cls, model: DupMAEModel, tokenizer, device: str | torch.device | None = None,
                   dtype: str = "fp32", name: str = "in-memory model") -> DupMAEEncoder:
        """Wrap a model already in memory (training, mining); ``dtype``: a concrete name of
        :data:`~dupmae_ir.precision.DTYPES` (int8 ones quantise a copy, never the caller's model)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, str(device or default_device()), dtype, name)
        return self

    def _setup(self, model, tokenizer, device: str, dtype: str, name: str) -> None:
        if dtype not in DTYPES[1:]:
            raise ValueError(f"dtype={dtype!r}; valid: {DTYPES[1:]} (resolve 'auto' with precision.resolve_dtype)")
        self.tokenizer = tokenizer
        self.model_name_or_path = name
        self.device = device
        self.dtype = dtype
        model.to(device).eval()
        # bf16/fp16: the entries an index keeps (top doc_topk) recomputed in fp32, selected in low precision
        low = autocast_dtype(dtype) is not None
        exact_topk = max(model.config.doc_topk or 0, model.config.query_topk or 0) if low else 0
        # CPU: max-pool without padding; GPU: the padded batch
        self.pooling = PoolingPlan(packed=packed_pool_pays(device), exact_topk=exact_topk)
        self.model = quantized(model, dtype) if dtype in (INT8, INT8_HEAD) else model
        self.config = self.model.config
        self._check_lengths(self.config)
        self.vocab = self.tokenizer.convert_ids_to_tokens(list(range(self.model.mlm.config.vocab_size)))

    @property
    def dtype_name(self) -> str:
        """The precision's name as provenance records it (the same string as :attr:`dtype`)."""
        return self.dtype

    def with_lengths(self, query_max_length: int | None = None, doc_max_length: int | None = None) -> DupMAEEncoder:
        """This encoder (same model, shared) with other maximum lengths; ``None`` keeps the current one."""
        if query_max_length is None and doc_max_length is None:
            return self
        return self.with_config(**{k: v for k, v in (("query_max_length", query_max_length),
                                                     ("doc_max_length", doc_max_length)) if v is not None})

    def with_config(self, **changes) -> DupMAEEncoder:
        """This encoder (same model, shared) with these :class:`RepresentationConfig` fields changed."""
        import copy

        other = copy.copy(self)
        other.config = replace(self.config, **changes)
        self._check_lengths(other.config)
        return other

    def _check_lengths(self, config: RepresentationConfig) -> None:
        """Query and document lengths from 2 ([CLS] and [SEP]) to the model's position embeddings."""
        from .errors import UserError

        positions = self.model.mlm.config.max_position_embeddings
        for name in ("query_max_length", "doc_max_length"):
            value = getattr(config, name)
            if not 2 <= value <= positions:
                raise UserError(f"--{name.replace('_', '-')}", f"{value} is outside the model's 2..{positions} "
                                                               f"positions ({self.model_name_or_path})",
                                f"pass a length from 2 to {positions}")

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
        low = autocast_dtype(self.dtype)
        with torch.autocast(device_type=self.device.split(":")[0], dtype=low, enabled=low is not None):
            if need_sparse:
                dense, bow = self.model(input_ids, mask, self.pooling)  # (B, d), (B, V)
            else:
                dense, bow = self.model.encode_dense(input_ids, mask, pooling), None  # (B, d)
        return dense.float(), (bow.float() if bow is not None else None)

    def forward_ids(self, ids: list[list[int]], need_sparse: bool = True,
                    pooling: str = "cls") -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`forward_arrays` of unpadded token ids."""
        return self.forward_arrays(*self._pad(ids), need_sparse, pooling)

    def batches(self, texts: Sequence[str], max_length: int, batch_size: int | None, need_sparse: bool = True,
                pooling: str = "cls", lengths: Sequence[int] | None = None, progress: str | None = None,
                prepared: list | None = None, own_pieces: bool = False):
        """Yield ``(rows, dense (b, d), bow (b, V) or None)`` over ``texts`` in batches of ``batch_size``,
        longest first (by token count, or by ``lengths`` when given); ``rows`` index into ``texts``.
        ``prepared``: the batches of :meth:`prepare`, made ahead. ``own_pieces``: each bag-of-words keeps
        only the word pieces of its own text (queries under ``query_terms="own"``)."""
        from tqdm import tqdm

        prepared = prepared if prepared is not None else self.prepare(texts, max_length, batch_size, lengths)
        for rows, input_ids, mask in tqdm(prepared, desc=progress, disable=progress is None, unit="batch"):
            dense, bow = self.forward_arrays(input_ids, mask, need_sparse, pooling)
            if own_pieces and bow is not None:
                bow = keep_own_pieces(bow, *(torch.from_numpy(a).to(bow.device) for a in (input_ids, mask)))
            yield rows, dense, bow

    def _encode(self, texts: list[str], max_length: int, topk: int | None, scale: float,
                keep_weights: bool, batch_size: int | None, min_weight: float = 0.0,
                own_pieces: bool = False) -> EncodedBatch:
        dense = np.zeros((len(texts), self.model.dense_dim), dtype=np.float32)  # (N, d)
        impacts: list[dict[str, int] | None] = [None] * len(texts)
        weights_all = torch.zeros(len(texts), len(self.vocab)) if keep_weights else None  # (N, V)
        for rows, d, bow in self.batches(texts, max_length, batch_size, own_pieces=own_pieces):
            weights = sparsify(bow, topk, min_weight)  # (b, V)
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
        """Queries: ``query_max_length``, ``query_terms`` (``own``: only the query's own word pieces),
        ``query_topk`` (None keeps all), weights below ``query_min_weight`` dropped, scale ``query_scale``."""
        c = self.config
        return self._encode(texts, c.query_max_length, c.query_topk, c.query_scale, keep_weights, batch_size,
                            c.query_min_weight, own_pieces=c.query_terms == "own")

    def grounded_shares(self, texts: list[str], k: int = 10, batch_size: int | None = 64) -> list[float | None]:
        """Per query, the share of its ``k`` heaviest impact terms (as :meth:`encode_queries` weights them)
        that are word pieces of its own text (:func:`~dupmae_ir.modeling.bow.grounded_share`)."""
        weights = self.encode_queries(list(texts), keep_weights=True, batch_size=batch_size).weights  # (N, V)
        pieces = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]  # the whole text, uncut
        return grounded_share(weights, pieces, k)


def quantized(model: DupMAEModel, dtype: str) -> DupMAEModel:
    """A copy of ``model`` with dynamic int8 linear layers: every ``nn.Linear`` (``int8``: attention,
    feed-forward, MLM transform, D -> V decoder) or the MLM head's only (``int8-head``: the encoder and
    the dense projection stay fp32). The caller's model is left as it was."""
    import copy

    from torch.ao.quantization import quantize_dynamic

    if dtype == INT8:
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # a quantised deep copy
    if dtype != INT8_HEAD:
        raise ValueError(f"dtype={dtype!r}; valid: {(INT8, INT8_HEAD)}")
    model = copy.deepcopy(model)
    model.mlm.cls = quantize_dynamic(model.mlm.cls, {torch.nn.Linear}, dtype=torch.qint8)
    return model
