"""Calibrations applied to a retriever before fine-tuning, and folding a score weight into its head.

- :func:`calibrate_sparse`: shift the MLM-head bias so the bag-of-words starts sparse;
- :func:`calibrate_sparse_scale`: scale the sparse scores to their best in-batch loss;
- :func:`fold_sparse_weight`: multiply every sparse score by a factor, inside the model's weights.
"""
from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)


def calibrate_sparse(retriever, tokenizer, texts: list[str], fraction: float, max_length: int,
                     batch_size: int = 32) -> None:
    """Shift the MLM-head bias so each vocabulary entry's max-pooled logit ``mu`` is positive in only
    ``fraction`` of the sample documents: ``b_v -= quantile_{1-fraction}(mu[:, v])``.

    Why: an MLM head initialised as the identity (or trained only with DupMAE's softmax bag-of-words
    loss, which is shift-invariant) gives positive logits for almost the whole vocabulary, so after
    ReLU the sparse inner products are ~1e5 and dwarf the dense part. The shift keeps each document's
    ranking of tokens (an idf-like per-token threshold) and makes the vector sparse.
    """
    from .bow import max_pool_head

    mus = []
    retriever.eval()
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            enc = tokenizer(texts[s:s + batch_size], max_length=max_length, truncation=True, padding=True,
                            return_tensors="pt")
            hidden = retriever.mlm.bert(**enc).last_hidden_state  # (b, L, D)
            mus.append(max_pool_head(hidden, enc["attention_mask"], retriever.mlm.cls, retriever.chunk_size))  # (b, V)
    mu = torch.cat(mus)  # (n, V)
    threshold = torch.quantile(mu, 1.0 - fraction, dim=0)  # (V,)
    with torch.no_grad():
        retriever.mlm.cls.predictions.bias -= threshold
    retriever.train()


def calibrate_sparse_scale(retriever, tokenizer, queries: list[str], positives: list[str], query_max_length: int,
                           doc_max_length: int, temperature: float = 1.0) -> float:
    """Scale the sparse scores by the factor ``s`` (folded into the MLM head, :func:`fold_sparse_weight`)
    that minimises the in-batch contrastive loss of the sparse part alone, ``CE(s * S / temperature)``
    with ``S = mu_q . mu_d`` over ``queries`` x their ``positives`` (row i's positive is column i).
    ``s`` comes from a log grid over [1e-4, 1e4] (steps of 10^0.05); the ranking each query makes is unchanged.
    Returns ``s``."""
    if retriever.config.activation != "plain_relu":
        raise ValueError(f"sparse_scale_calibration needs activation 'plain_relu' (scores scale with the logits); "
                         f"the model has {retriever.config.activation!r}")
    retriever.eval()
    with torch.inference_mode():
        q = tokenizer(queries, max_length=query_max_length, truncation=True, padding=True, return_tensors="pt")
        d = tokenizer(positives, max_length=doc_max_length, truncation=True, padding=True, return_tensors="pt")
        q_bow = retriever(q["input_ids"], q["attention_mask"])[1]  # (n, V)
        d_bow = retriever(d["input_ids"], d["attention_mask"])[1]  # (n, V)
        scores = (q_bow @ d_bow.T).float() / temperature  # (n, n)
        grid = torch.logspace(-4, 4, 161, dtype=torch.float64)
        target = torch.arange(len(queries))
        losses = [torch.nn.functional.cross_entropy(float(g) * scores, target).item() for g in grid]
        before = torch.nn.functional.cross_entropy(scores, target).item()
    best = float(grid[min(range(len(losses)), key=losses.__getitem__)])
    log.info("sparse scale calibration: x%.4g (in-batch sparse loss %.3f -> %.3f on %d pairs)", best, before,
             min(losses), len(queries))
    fold_sparse_weight(retriever, best)
    retriever.train()
    return best


def fold_sparse_weight(retriever, weight: float) -> None:
    """Scale the MLM-head logits by ``sqrt(weight)`` (LayerNorm affine and bias), so that with ReLU
    ``mu_q . mu_d`` of the saved model equals ``weight *`` the trained one."""
    c = math.sqrt(weight)
    head = retriever.mlm.cls.predictions
    with torch.no_grad():
        head.transform.LayerNorm.weight.mul_(c)
        head.transform.LayerNorm.bias.mul_(c)
        head.bias.mul_(c)
