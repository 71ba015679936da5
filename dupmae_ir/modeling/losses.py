"""Fine-tuning losses as plain functions (DupMAE paper sections 3.4 and 4).

The relevance score is DupMAE's unweighted sum of two inner products (paper section 3.4),
generalised with weights so either part can be weighted or isolated::

    s(q, d) = w_dense * h_q . h_d + w_sparse * mu_q . mu_d

- :func:`contrastive_loss`: stages 1 and 2, ``-log softmax`` of the positive over {d+} U negatives
  (the query's own group, the other queries' groups in the batch, and, under ``torchrun``, the
  groups of every process);
- :func:`distillation_loss`: stage 3, KL (or soft-label cross-entropy) from the teacher's softmax over
  {d+} U hard negatives to the student's softmax over the same group;
- :func:`flops_regularizer`: FLOPS sparsity regulariser ``sum_v (mean_b |w_bv|)^2`` (Paria et al.,
  ICLR 2020; as used by SPLADE).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DISTILL_LOSSES = ("kl", "ce")


def combined_scores(q_dense: torch.Tensor, q_bow: torch.Tensor | None, d_dense: torch.Tensor,
                    d_bow: torch.Tensor | None, dense_weight: float = 1.0, sparse_weight: float = 1.0) -> torch.Tensor:
    """All query x document scores ``w_dense * q_dense @ d_dense^T + w_sparse * q_bow @ d_bow^T``.

    q_dense (Q, d), q_bow (Q, V), d_dense (N, d), d_bow (N, V) -> (Q, N). A part with weight 0 (or
    ``None`` representations) is skipped.
    """
    scores = None
    if dense_weight:
        scores = dense_weight * (q_dense @ d_dense.T)  # (Q, N)
    if sparse_weight and q_bow is not None and d_bow is not None:
        sparse = sparse_weight * (q_bow @ d_bow.T)  # (Q, N)
        scores = sparse if scores is None else scores + sparse
    if scores is None:
        raise ValueError("both dense_weight and sparse_weight are 0: nothing to score")
    return scores


def contrastive_loss(scores: torch.Tensor, group_size: int, offset: int = 0, temperature: float = 1.0) -> torch.Tensor:
    """In-batch (+ hard) negative InfoNCE: ``mean_i -log softmax(scores_i / T)[pos(i)]``.

    scores: (Q, N) with documents laid out as consecutive groups of ``group_size`` (positive first),
    query i's group starting at column ``(offset + i) * group_size``; ``offset`` is the number of
    queries held by lower-ranked processes when documents were gathered across processes.
    """
    q = scores.shape[0]
    target = (torch.arange(q, device=scores.device) + offset) * group_size  # (Q,)
    return F.cross_entropy(scores.float() / temperature, target)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
                      teacher_temperature: float = 1.0, kind: str = "kl") -> torch.Tensor:
    """Soft-label loss over each query's own group {d+} U negatives (paper stage 3).

    student, teacher: (Q, G) scores. ``p_t = softmax(teacher / T_t)``, ``log p_s = log_softmax(student / T)``;
    ``kl``: ``mean_q sum_j p_t (log p_t - log p_s)``; ``ce``: ``mean_q -sum_j p_t log p_s`` (the KL plus
    the teacher's entropy, a constant: the same gradients).
    """
    if kind not in DISTILL_LOSSES:
        raise ValueError(f"distillation loss {kind!r}; valid: {DISTILL_LOSSES}")
    log_ps = F.log_softmax(student.float() / temperature, dim=-1)  # (Q, G)
    log_pt = F.log_softmax(teacher.float() / teacher_temperature, dim=-1)  # (Q, G)
    pt = log_pt.exp()  # (Q, G)
    per_query = (pt * (log_pt - log_ps)).sum(-1) if kind == "kl" else -(pt * log_ps).sum(-1)  # (Q,)
    return per_query.mean()


def bag_of_words_loss(mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DupMAE's L_bow per text (eqs. 7-8): ``-sum_v target[v] log softmax(mu)[v]``, one softmax over the vocabulary
    (fp16/bf16 logits upcast to fp32). mu, target (B, V) -> (B,)."""
    logits = mu.float() if mu.dtype in (torch.float16, torch.bfloat16) else mu
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1)


def own_bag_of_words_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          special_mask: torch.Tensor) -> torch.Tensor:
    """:func:`bag_of_words_loss` of texts against their own visible pieces, averaged over the texts that have any:
    ``t`` is each text's piece counts (specials and padding left out) normalised to sum to 1. Not pre-training's
    target (1/m on each distinct piece of a 30%-masked input, summing below 1), so its weight is not comparable.
    logits (B, V) max-pooled before the activation; input_ids, attention_mask (B, L); special_mask (V,)."""
    target = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)  # (B, V)
    target.scatter_add_(1, input_ids, attention_mask.to(torch.float32))  # piece counts
    target = target.masked_fill(special_mask, 0.0)
    total = target.sum(-1, keepdim=True)  # (B, 1)
    per_text = bag_of_words_loss(logits, target / total.clamp(min=1.0))  # (B,)
    content = total.squeeze(-1) > 0
    return per_text[content].mean() if content.any() else per_text.sum() * 0.0  # * 0.0: keeps the graph


def flops_regularizer(weights: torch.Tensor) -> torch.Tensor:
    """FLOPS: ``sum_v (mean_b |w[b, v]|)^2`` for a batch of bag-of-words weights (B, V) -> scalar."""
    return weights.abs().mean(dim=0).pow(2).sum()
