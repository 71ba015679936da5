"""Batch encoder for the toolkit: texts -> dense vectors + integer impact vectors, one forward pass.

``DupMAEEncoder(model_name_or_path).encode_docs(texts)`` / ``.encode_queries(texts)`` return an
:class:`EncodedBatch`. Documents are cut to ``doc_topk`` entries, queries to ``query_topk`` (if set);
both are quantised with their stored scales (``RetrieverConfig``). DupMAE paper section 3.4: the
dense part is ``h_hat = W^T h_cls``, the lexical part ``mu`` (eq. 7) max-pooled over ordinary tokens.

Speed (see ``bench/encode.py``): texts given with ``batch_size`` are tokenised once, sorted by length
and cut into batches padded only to their own longest text (dynamic padding), run under
``torch.inference_mode``, then returned in the caller's order. ``dtype``:

- ``fp32``: exact reference;
- ``bf16`` / ``fp16``: autocast (fp16 only on GPUs);
- ``int8``: dynamic int8 quantisation of every linear layer (encoder and the 30,522-way MLM head),
  CPU only: ~1.6x faster than fp32 here, but it costs quality (measured on a 700-doc SciFact
  sub-corpus holding every test-relevant doc, default backbone: dense nDCG@10 0.720 fp32 -> 0.631
  int8, vector cosine 0.974): opt-in only, never chosen by ``auto``;
- ``int8-head``: dynamic int8 quantisation of the MLM head only (its transform and the D -> V
  decoder, the half of the FLOPs that only the bag-of-words needs), CPU only. The encoder stays fp32,
  so the dense vectors are the fp32 ones bit for bit. Measured on full SciFact (5,183 docs, 128
  pieces, a stage-2 checkpoint): encoding 1.66x faster than fp32, nDCG@10 dense 0.6286 = 0.6286,
  impact 0.4850 -> 0.4813, hybrid 0.6718 -> 0.6727. Opt-in only;
- ``auto``: a pure function of the hardware, so the same command on the same machine always picks the
  same dtype (:func:`cpu_has_fast_bf16`): bf16 on GPUs that support it (fp16 on older ones); on CPUs
  bf16 where the cores have native bf16 instructions (AVX512-BF16 or AMX, as torch or
  ``/proc/cpuinfo`` report them), else fp32 (AVX2-only cores run bf16 matmul ~100x slower).
  :func:`cpu_bf16_speedup` measures the matmul speed-up as a diagnostic only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .modeling.bow import packed_pool_pays, quantize, to_impact_dicts, topk_sparsify
from .modeling.retriever import DupMAERetriever, RetrieverConfig

log = logging.getLogger(__name__)

DTYPES = ("auto", "fp32", "bf16", "fp16", "int8", "int8-head")
INT8 = "int8"  # not a torch dtype: marks dynamic int8 quantisation of the linear layers
INT8_HEAD = "int8-head"  # not a torch dtype: the same for the MLM head's linear layers only


@dataclass
class EncodedBatch:
    """dense: (B, d) float32; impacts: one ``{token: int}`` per text; weights: (B, V) float before
    quantisation (top-k applied), kept only when asked for."""

    dense: np.ndarray
    impacts: list[dict[str, int]]
    weights: torch.Tensor | None = None


def resolve_dtype(dtype: str, device: str):
    """Map a ``--dtype`` name to a torch dtype (or :data:`INT8`); ``auto`` as in the module doc."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; valid: {DTYPES}")
    cuda = device.startswith("cuda")
    if dtype in (INT8, INT8_HEAD):
        if cuda:
            raise ValueError(f"dtype={dtype!r} (dynamic quantisation) runs on CPU only; use fp16/bf16 on GPUs.")
        return dtype
    if dtype == "fp32":
        return torch.float32
    if dtype == "bf16":
        return torch.bfloat16
    if dtype == "fp16":
        if not cuda:
            raise ValueError("dtype='fp16' needs a GPU (CPU fp16 matmul is emulated and slow); use auto, fp32 or int8.")
        return torch.float16
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX): torch's own probe,
    else the ``/proc/cpuinfo`` flags. Deterministic: no timing is involved."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(p) for p in probes):
        return any(bool(p()) for p in probes)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = set(" ".join(line for line in fh if line.startswith("flags")).split())
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


@lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of a small encoder-shaped matmul on this CPU (measured once per process).

    A diagnostic (``python -m dupmae_ir.encode --probe-dtype``), never a decision: timings move with
    the machine's load, and ``auto`` must not. Costs well under a second.
    """
    import time

    a = torch.randn(256, 384)
    b = torch.randn(384, 1536)
    times = {}
    for dt in (torch.float32, torch.bfloat16):
        x, y = a.to(dt), b.to(dt)
        x @ y  # warm-up
        runs = []
        for _ in range(7):  # the fastest of 7: robust to a busy core (a mean flipped the choice here)
            start = time.perf_counter()
            x @ y
            runs.append(time.perf_counter() - start)
        times[dt] = min(runs)
    speedup = times[torch.float32] / max(times[torch.bfloat16], 1e-9)
    log.info("CPU bf16 matmul speed-up over fp32: %.2fx", speedup)
    return speedup


def dtype_name(dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", INT8: INT8, INT8_HEAD: INT8_HEAD}[dtype]


class DupMAEEncoder:
    """Encode texts with a DupMAE checkpoint (or any BERT masked LM / the default backbone)."""

    def __init__(self, model_name_or_path: str = "default", device: str = "cpu", dtype: str = "fp32",
                 config: RetrieverConfig | None = None):
        self.model, self.tokenizer = DupMAERetriever.from_pretrained(model_name_or_path, config=config)
        self.model_name_or_path = str(model_name_or_path)
        self.device = device
        self.dtype = resolve_dtype(dtype, device)
        self.model.to(device).eval()
        self.model.packed_pool = packed_pool_pays(device)  # CPU: max-pool without padding; GPU: padded batch
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

    # --- tokenisation --------------------------------------------------------------------------
    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids with [CLS] ... [SEP], truncated to ``max_length``, unpadded."""
        return self.tokenizer(list(texts), max_length=max_length, truncation=True, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Dynamic padding to the longest sequence of this batch -> input_ids, attention_mask (B, L)."""
        length = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), length), self.tokenizer.pad_token_id, dtype=torch.long)  # (B, L)
        mask = torch.zeros((len(ids), length), dtype=torch.long)  # (B, L)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, :len(x)] = 1
        return input_ids.to(self.device), mask.to(self.device)

    # --- forward -------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward_ids(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass over one batch of token ids -> dense (B, d), bow (B, V), both fp32 and on
        the encoder's device (top-k and quantisation then run there too: on a GPU only the k kept
        entries per text travel to the host)."""
        input_ids, mask = self._pad(ids)
        use_autocast = self.dtype in (torch.bfloat16, torch.float16)
        with torch.autocast(device_type=self.device.split(":")[0], dtype=self.dtype if use_autocast else None,
                            enabled=use_autocast):
            dense, bow = self.model(input_ids, mask)  # (B, d), (B, V)
        return dense.float(), bow.float()

    def _encode(self, texts: list[str], max_length: int, topk: int | None, scale: float,
                keep_weights: bool, batch_size: int | None) -> EncodedBatch:
        ids = self.tokenize(texts, max_length)
        if not ids:
            return EncodedBatch(np.zeros((0, self.model.dense_dim), dtype=np.float32), [],
                                torch.zeros(0, len(self.vocab)) if keep_weights else None)
        batch_size = batch_size or len(ids)
        # longest first: the first batch shows the peak memory at once; batches are padded per batch
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        dense = np.zeros((len(ids), self.model.dense_dim), dtype=np.float32)  # (N, d)
        impacts: list[dict[str, int] | None] = [None] * len(ids)
        weights_all = torch.zeros(len(ids), len(self.vocab)) if keep_weights else None  # (N, V)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            d, bow = self.forward_ids([ids[i] for i in idx])  # (b, d), (b, V)
            weights = topk_sparsify(bow, topk)  # (b, V)
            rows = to_impact_dicts(quantize(weights, scale).cpu(), self.vocab)
            dense[idx] = d.cpu().numpy()
            for i, row in zip(idx, rows):
                impacts[i] = row
            if weights_all is not None:
                weights_all[idx] = weights.cpu()
        return EncodedBatch(dense, impacts, weights_all)

    def encode_docs(self, texts: list[str], keep_weights: bool = False, batch_size: int | None = None) -> EncodedBatch:
        """Documents: ``doc_max_length``, top ``doc_topk`` entries, scale ``doc_scale``. With
        ``batch_size`` the texts are length-sorted into batches (results in the given order)."""
        c = self.config
        return self._encode(texts, c.doc_max_length, c.doc_topk, c.doc_scale, keep_weights, batch_size)

    def encode_queries(self, texts: list[str], keep_weights: bool = False, batch_size: int | None = None) -> EncodedBatch:
        """Queries: ``query_max_length``, ``query_topk`` (None keeps all), scale ``query_scale``."""
        c = self.config
        return self._encode(texts, c.query_max_length, c.query_topk, c.query_scale, keep_weights, batch_size)
