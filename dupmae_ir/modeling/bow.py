"""The bag-of-words ("ordinary token") representation: the one home of max-pooling over vocabulary
logits, the non-negative activation, top-k sparsification and integer quantisation.

DupMAE (RetroMAE-2, Xiao et al., ACL 2023), section 3.3/3.4: ``mu = max_{t >= 1} Z[:, t, :]`` over the
MLM-head logits of the ordinary tokens (eq. 7); for retrieval ``mu`` is sparsified to its top-k
entries on documents and scored with an inner product (section 3.4). The paper leaves the activation
for an inverted index open; :data:`ACTIVATIONS` lists the choices.
"""
from __future__ import annotations

from typing import Callable

import torch

ACTIVATIONS = ("none", "relu", "log1p_relu")
PAD_PENALTY = 1000.0  # the authors' code adds -1000 at padding before the max (DUPMAE.md section 1)


def max_pool_logits(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``mu[b, v] = max_{t >= 1, non-pad} logits[b, t, v]`` (raw logits, [CLS] excluded).

    logits: (B, L, V); attention_mask: (B, L), 1 = real token. Padding gets -1000 added, exactly as
    the authors' code, so a sequence of only [CLS] still returns finite values.
    """
    penalty = (1.0 - attention_mask[:, 1:, None].to(logits.dtype)) * PAD_PENALTY  # (B, L-1, 1)
    return (logits[:, 1:] - penalty).max(dim=1).values  # (B, V)


def max_pool_logits_(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """:func:`max_pool_logits` without a second (B, L, V) tensor: the -1000 penalty is subtracted
    *in place* at the excluded positions only, then the max runs over a view.

    Same values as :func:`max_pool_logits` (real positions are untouched, excluded ones get exactly
    ``x - 1000``). ``logits`` is modified: read anything else you need from it first. Autograd-safe
    when ``logits`` comes from a linear layer (its backward needs no output) -- the pre-training case.
    """
    excluded = attention_mask[:, 1:] == 0  # (B, L-1)
    if bool(excluded.any()):
        body = logits[:, 1:]  # (B, L-1, V) view
        body[excluded] -= PAD_PENALTY  # in place on the excluded rows only
    return logits[:, 1:].max(dim=1).values  # (B, V)


def max_pool_head(hidden: torch.Tensor, attention_mask: torch.Tensor,
                  head: Callable[[torch.Tensor], torch.Tensor], chunk_size: int = 64) -> torch.Tensor:
    """:func:`max_pool_logits` of ``head(hidden)`` without materialising (B, L, V) at once.

    hidden: (B, L, D) -> (B, V). Positions are sent through the head ``chunk_size`` at a time and
    reduced with a running max, so memory is O(B * chunk * V) instead of O(B * L * V). Differentiable.
    """
    mu = None
    length = hidden.shape[1]
    for start in range(1, length, chunk_size):
        end = min(start + chunk_size, length)
        logits = head(hidden[:, start:end])  # (B, c, V)
        penalty = (1.0 - attention_mask[:, start:end, None].to(logits.dtype)) * PAD_PENALTY
        part = (logits - penalty).max(dim=1).values  # (B, V)
        mu = part if mu is None else torch.maximum(mu, part)
    if mu is None:  # length 1: only [CLS]
        raise ValueError("max_pool_head needs at least one position after [CLS]")
    return mu


def activate(mu: torch.Tensor, activation: str) -> torch.Tensor:
    """Non-negative weights for an inverted index: ``relu``, ``log1p_relu`` (SPLADE-style), or ``none``."""
    if activation == "none":
        return mu
    if activation == "relu":
        return torch.relu(mu)
    if activation == "log1p_relu":
        return torch.log1p(torch.relu(mu))
    raise ValueError(f"activation={activation!r}; valid: {ACTIVATIONS}")


def topk_sparsify(weights: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the ``k`` largest entries per row (B, V), zero the rest; ``None``/0 keeps everything."""
    if not k or k >= weights.shape[-1]:
        return weights
    values, indices = weights.topk(k, dim=-1)  # (B, k)
    return torch.zeros_like(weights).scatter_(-1, indices, values)


def quantize(weights: torch.Tensor, scale: float) -> torch.Tensor:
    """Integer impacts ``round(w * scale)`` (int32), the form Anserini's impact index stores."""
    return torch.round(weights.float() * scale).to(torch.int32)


def to_impact_dicts(impacts: torch.Tensor, vocab: list[str]) -> list[dict[str, int]]:
    """Rows of integer impacts (B, V) -> ``[{token: int}]`` with the zero entries dropped.

    Values are Python ``int`` (Pyserini's LuceneImpactSearcher rejects numpy ints).
    """
    out = []
    for row in impacts:
        nz = torch.nonzero(row > 0).flatten()
        out.append({vocab[i]: int(v) for i, v in zip(nz.tolist(), row[nz].tolist())})
    return out
