"""Batch encoder for the toolkit: texts -> dense vectors + integer impact vectors, one forward pass.

``DupMAEEncoder(model_name_or_path).encode_docs(texts)`` / ``.encode_queries(texts)`` return an
:class:`EncodedBatch`. Documents are cut to ``doc_topk`` entries, queries to ``query_topk`` (if set);
both are quantised with their stored scales (``RetrieverConfig``). Pyserini adapters build on this.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .modeling.bow import quantize, to_impact_dicts, topk_sparsify
from .modeling.retriever import DupMAERetriever, RetrieverConfig

DTYPES = ("auto", "fp32", "bf16", "fp16")


@dataclass
class EncodedBatch:
    """dense: (B, d) float32; impacts: one ``{token: int}`` per text; weights: (B, V) float before
    quantisation (top-k applied), kept only when asked for."""

    dense: np.ndarray
    impacts: list[dict[str, int]]
    weights: torch.Tensor | None = None


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bf16 on CPUs with native bf16 matmul or CUDA bf16, fp16 on other GPUs, else fp32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; valid: {DTYPES}")
    if dtype == "fp32":
        return torch.float32
    if dtype == "bf16":
        return torch.bfloat16
    if dtype == "fp16":
        return torch.float16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32


def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


class DupMAEEncoder:
    """Encode texts with a DupMAE checkpoint (or any BERT masked LM / the default backbone)."""

    def __init__(self, model_name_or_path: str = "default", device: str = "cpu", dtype: str = "fp32",
                 config: RetrieverConfig | None = None):
        self.model, self.tokenizer = DupMAERetriever.from_pretrained(model_name_or_path, config=config)
        self.model_name_or_path = str(model_name_or_path)
        self.device = device
        self.dtype = resolve_dtype(dtype, device)
        self.model.to(device).eval()
        self.config = self.model.config
        self.vocab = self.tokenizer.convert_ids_to_tokens(list(range(self.model.mlm.config.vocab_size)))

    @torch.inference_mode()
    def _encode(self, texts: list[str], max_length: int, topk: int | None, scale: float,
                keep_weights: bool) -> EncodedBatch:
        enc = self.tokenizer(list(texts), max_length=max_length, truncation=True, padding=True,
                             return_tensors="pt").to(self.device)
        with torch.autocast(device_type=self.device.split(":")[0], dtype=self.dtype,
                            enabled=self.dtype != torch.float32):
            dense, bow = self.model(enc["input_ids"], enc["attention_mask"])  # (B, d), (B, V)
        weights = topk_sparsify(bow.float(), topk)  # (B, V)
        impacts = to_impact_dicts(quantize(weights, scale).cpu(), self.vocab)
        return EncodedBatch(dense.float().cpu().numpy(), impacts, weights.cpu() if keep_weights else None)

    def encode_docs(self, texts: list[str], keep_weights: bool = False) -> EncodedBatch:
        c = self.config
        return self._encode(texts, c.doc_max_length, c.doc_topk, c.doc_scale, keep_weights)

    def encode_queries(self, texts: list[str], keep_weights: bool = False) -> EncodedBatch:
        c = self.config
        return self._encode(texts, c.query_max_length, c.query_topk, c.query_scale, keep_weights)
