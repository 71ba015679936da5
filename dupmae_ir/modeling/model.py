"""The DupMAE retrieval model (paper section 3.4): one forward pass gives both representations.

- dense: ``h_hat = W^T h_cls`` ([CLS] of the last layer, optional learned projection D -> d');
- lexical: ``mu`` = max-pooled MLM-head logits over ordinary tokens (:mod:`dupmae_ir.modeling.bow`),
  a non-negative activation, special tokens zeroed;
- score: ``<q, d> = h_hat_q . h_hat_d + sum_i mu_q[i] * mu_d[i]`` (top-k on documents at indexing).

A checkpoint folder is a standard Hugging Face masked-LM checkpoint (``AutoModelForMaskedLM`` loads
it; its encoder alone is what stock Pyserini's ``--encoder-class auto --pooling cls`` reads) plus
``dupmae_config.json`` (:class:`RepresentationConfig`) and, when a projection exists,
``dupmae_projection.safetensors``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ..java import LUCENE_MAX_CLAUSES
from . import QUERY_TERMS
from .backbone import load_masked_lm, load_tokenizer, resolve_model_path
from .bow import (
    activate,
    canonical_activation,
    exact_top_entries,
    max_pool_head,
    max_pool_head_packed,
    max_pool_linear_with_mlm,
)

CONFIG_NAME = "dupmae_config.json"
POOLINGS = ("cls", "mean")
PROJECTION_NAME = "dupmae_projection.safetensors"


@dataclass(frozen=True)
class PoolingPlan:
    """Which of the equal-valued max-pool routes :meth:`DupMAEModel.forward` takes: the same ``mu`` on
    every route (up to the precision asked for), a different cost. The caller decides; the model holds
    no such flags. Training uses the default plan; :class:`~dupmae_ir.inference.DupMAEEncoder` builds one
    for its device and precision."""

    packed: bool = False  # inference: bow.max_pool_head_packed, per text without padding (CPU speed path)
    exact_topk: int = 0  # inference under bf16/fp16: the top entries recomputed in fp32 (bow.exact_top_entries)
    fused: bool = True  # with gradients: bow.max_pool_linear_with_mlm (False: plain autograd, same values)


TRAINING_POOLING = PoolingPlan()


@dataclass
class RepresentationConfig:
    """How a checkpoint turns text into the two representations. Saved beside the weights."""

    dense_dim: int | None = None  # None: no projection, h_cls as is (paper: 384 for BERT-base)
    activation: str = "plain_relu"  # non-negative weights for the inverted index; see bow.ACTIVATIONS
    doc_topk: int = 384  # paper k = 384 on documents
    # Queries keep their largest weights up to Lucene's default BooleanQuery limit, so stock Pyserini
    # searches DupMAE queries unpatched (an untrimmed query holds ~30k positive entries). None: keep all.
    query_topk: int | None = LUCENE_MAX_CLAUSES
    query_min_weight: float = 0.0  # query weights below this are dropped before quantisation (0: keep all)
    # "own": a query weights only the word pieces of its own text (no expansion; documents still expand)
    query_terms: str = "all"
    doc_scale: float = 100.0  # integer impact = round(weight * scale)
    query_scale: float = 100.0
    query_max_length: int = 32
    doc_max_length: int = 256
    pretraining: dict | None = None  # provenance of the DupMAE pre-training, when there was one
    finetuning: dict | None = None  # provenance of fine-tuning, when there was one

    def __post_init__(self):
        self.activation = canonical_activation(self.activation)  # old configs: "relu"
        if self.query_terms not in QUERY_TERMS:
            raise ValueError(f"query_terms={self.query_terms!r}; valid: {QUERY_TERMS}")

    @classmethod
    def load(cls, folder: str | Path) -> RepresentationConfig:
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"dupmae_ir_version"}
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}; valid: {sorted(known)}")
        data.pop("dupmae_ir_version", None)
        return cls(**data)

    def save(self, folder: str | Path) -> None:
        from .. import __version__
        from ..provenance import atomic_write_text

        data = {**asdict(self), "dupmae_ir_version": __version__}
        atomic_write_text(Path(folder) / CONFIG_NAME, json.dumps(data, indent=2) + "\n")


class DupMAEModel(nn.Module):
    """A masked LM + optional projection producing ``(dense, bow)`` for a batch of token ids."""

    def __init__(self, mlm: nn.Module, config: RepresentationConfig, chunk_size: int = 64):
        super().__init__()
        self.mlm = mlm
        self.config = config
        self.chunk_size = chunk_size
        hidden = mlm.config.hidden_size
        self.projection = None
        if config.dense_dim and config.dense_dim != hidden:
            self.projection = nn.Linear(hidden, config.dense_dim, bias=False)
            nn.init.normal_(self.projection.weight, std=mlm.config.initializer_range)
        special = torch.zeros(mlm.config.vocab_size, dtype=torch.bool)
        self.register_buffer("special_mask", special, persistent=False)

    def set_special_ids(self, ids: list[int]) -> None:
        """Token ids whose bag-of-words weight is forced to 0 ([CLS], [SEP], [PAD], [MASK], [UNK])."""
        self.special_mask.zero_()
        self.special_mask[torch.tensor(sorted(set(ids)), dtype=torch.long)] = True

    @property
    def dense_dim(self) -> int:
        return self.config.dense_dim or self.mlm.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pooling: PoolingPlan = TRAINING_POOLING, with_logits: bool = False):
        """input_ids, attention_mask: (B, L) -> dense (B, d'), bow (B, V) activated, before top-k;
        ``pooling`` picks the max-pool route (:class:`PoolingPlan`); ``with_logits`` also returns the
        max-pooled logits before the activation (B, V) (the bag-of-words loss's input)."""
        out = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state  # (B, L, D)
        dense = hidden[:, 0]  # (B, D): h_cls
        if self.projection is not None:
            dense = self.projection(dense)  # (B, d')
        if pooling.packed:
            mu = max_pool_head_packed(hidden, attention_mask, self.mlm.cls)  # (B, V)
        elif pooling.fused and torch.is_grad_enabled():  # training: same values, cheaper backward
            head = self.mlm.cls.predictions
            mu, _ = max_pool_linear_with_mlm(head.transform(hidden), head.decoder.weight, head.decoder.bias,
                                             attention_mask)  # (B, V)
        else:
            mu = max_pool_head(hidden, attention_mask, self.mlm.cls, self.chunk_size)  # (B, V)
        if pooling.exact_topk and not torch.is_grad_enabled():  # bf16/fp16 inference: kept entries in fp32
            mu = exact_top_entries(mu, hidden, attention_mask, self.mlm.cls, pooling.exact_topk)  # (B, V)
        bow = activate(mu, self.config.activation).masked_fill(self.special_mask, 0.0)  # (B, V)
        return (dense, bow, mu) if with_logits else (dense, bow)

    def encode_dense(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "cls") -> torch.Tensor:
        """The dense part alone (skips the vocabulary projection): (B, d').

        ``pooling="mean"`` (masked mean of the last layer, L2-normalised, no projection) is not DupMAE's
        representation: it is the native pooling of sentence-transformers backbones such as
        all-MiniLM-L6-v2 (Pooling(mean) + Normalize), used for their zero-shot baseline.
        """
        hidden = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        if pooling == "mean":
            mask = attention_mask[..., None].to(hidden.dtype)  # (B, L, 1)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, D)
            return torch.nn.functional.normalize(mean, dim=-1)  # (B, D): cosine, as the ST model scores
        if pooling != "cls":
            raise ValueError(f"pooling={pooling!r}; valid: {POOLINGS}")
        h_cls = hidden[:, 0]  # (B, D)
        return self.projection(h_cls) if self.projection is not None else h_cls  # (B, d')

    # --- persistence ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_name_or_path: str | Path, config: RepresentationConfig | None = None,
                        mlm_head_init: str = "identity", **kwargs) -> tuple[DupMAEModel, object]:
        """Load ``(retriever, tokenizer)`` from a checkpoint folder, hub id or the default backbone."""
        path = resolve_model_path(model_name_or_path)
        if Path(path).is_dir():
            config = config or RepresentationConfig.load(path)
        else:
            config = config or RepresentationConfig()
        tokenizer = load_tokenizer(path)  # checks the folder before the weights are allocated
        mlm = load_masked_lm(path, mlm_head_init=mlm_head_init, **kwargs)
        model = cls(mlm, config)
        proj = Path(path) / PROJECTION_NAME
        if model.projection is not None and proj.is_file():
            from safetensors.torch import load_file

            model.projection.load_state_dict(load_file(str(proj)))
        model.set_special_ids(list(tokenizer.all_special_ids))
        return model, tokenizer

    def save_pretrained(self, folder: str | Path, tokenizer=None) -> None:
        """Write the HF masked-LM checkpoint (safetensors), tokenizer, projection and config."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.mlm.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        if self.projection is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in self.projection.state_dict().items()},
                      str(folder / PROJECTION_NAME))
        self.config.save(folder)
