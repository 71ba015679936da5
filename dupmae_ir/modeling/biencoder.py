"""The bi-encoder trained in fine-tuning (paper section 4): a :class:`DupMAEModel` and the loss of
its stage on the combined score ``w_dense * h_q . h_d + w_sparse * mu_q . mu_d``.

Stages 1-2: contrastive loss of each query over its positive, its negatives and every other document
of the batch (under torchrun: of every process, :func:`gather_with_grad`); stage 3: distillation from
teacher scores over its own group. Options: part losses (each part also trained alone), FLOPS
regularisation of the bag-of-words vectors, pre-training's bag-of-words loss kept on every text.
"""
from __future__ import annotations

import torch
from torch import nn

from .losses import combined_scores, contrastive_loss, distillation_loss, flops_regularizer, own_bag_of_words_loss
from .model import TRAINING_POOLING


def gather_with_grad(t):
    """All-gather ``t`` (n, ...) from every process -> (world * n, ...); the local slice keeps its gradient."""
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    parts[dist.get_rank()] = t
    return torch.cat(parts)  # (world * n, ...)


class BiEncoderForTraining(nn.Module):
    """A :class:`DupMAEModel` plus the fine-tuning loss of its stage; ``forward`` returns a dict
    with ``loss`` and the logged terms."""

    def __init__(self, retriever, group_size: int, temperature: float = 1.0, teacher_temperature: float = 1.0,
                 distill_loss: str = "kl", dense_weight: float = 1.0, sparse_weight: float = 1.0,
                 part_loss_weight: float = 0.0, flops_query: float = 0.0, flops_doc: float = 0.0,
                 share_negatives: bool = True, pooling=None, bow_loss_weight: float = 0.0):
        super().__init__()
        self.retriever = retriever
        self.pooling = pooling or TRAINING_POOLING  # the max-pool route (PoolingPlan); the default is fused
        self.group_size = group_size
        self.temperature = temperature
        self.teacher_temperature = teacher_temperature
        self.distill_kind = distill_loss
        self.dense_weight = dense_weight
        self.sparse_weight = sparse_weight
        self.part_loss_weight = part_loss_weight
        self.flops_query = flops_query
        self.flops_doc = flops_doc
        self.share_negatives = share_negatives
        self.bow_loss_weight = bow_loss_weight
        self.need_sparse = bool(sparse_weight or flops_query or flops_doc or bow_loss_weight)

    def encode(self, input_ids, attention_mask):
        """(dense (n, d), bow (n, V) or None); with the bag-of-words loss on, that loss of these texts too."""
        if self.bow_loss_weight:
            dense, bow, logits = self.retriever(input_ids, attention_mask, self.pooling, with_logits=True)
            return dense, bow, own_bag_of_words_loss(logits, input_ids, attention_mask, self.retriever.special_mask)
        if self.need_sparse:
            return *self.retriever(input_ids, attention_mask, self.pooling), None  # (n, d), (n, V)
        return self.retriever.encode_dense(input_ids, attention_mask), None, None  # (n, d)

    def forward(self, query_input_ids, query_attention_mask, doc_input_ids, doc_attention_mask,
                teacher_scores=None):
        q_dense, q_bow, q_own = self.encode(query_input_ids, query_attention_mask)  # (B, d), (B, V)
        d_dense, d_bow, d_own = self.encode(doc_input_ids, doc_attention_mask)  # (B*G, d), (B*G, V)
        b, g = q_dense.shape[0], self.group_size
        terms, scale = {}, 1.0
        if teacher_scores is not None:  # stage 3: each query against its own group
            def part_scores(dense_weight, sparse_weight):  # (B, G)
                student = dense_weight * torch.einsum("bd,bgd->bg", q_dense, d_dense.view(b, g, -1))
                if sparse_weight:
                    student = student + sparse_weight * torch.einsum("bv,bgv->bg", q_bow, d_bow.view(b, g, -1))
                return student

            def part_loss(scores):
                return distillation_loss(scores, teacher_scores, self.temperature, self.teacher_temperature,
                                         self.distill_kind)
            name = "distill_loss"
        else:
            offset = 0
            dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
            if self.share_negatives and dist_on and torch.distributed.get_world_size() > 1:
                d_dense = gather_with_grad(d_dense)  # (W*B*G, d)
                d_bow = gather_with_grad(d_bow) if d_bow is not None else None  # (W*B*G, V)
                offset = torch.distributed.get_rank() * b
                scale = float(torch.distributed.get_world_size())  # DDP averages gradients over ranks

            def part_scores(dense_weight, sparse_weight):  # (B, N)
                return combined_scores(q_dense, q_bow, d_dense, d_bow, dense_weight, sparse_weight)

            def part_loss(scores):
                return contrastive_loss(scores, g, offset, self.temperature)
            name = "contrastive_loss"
            terms["candidates"] = torch.tensor(float(d_dense.shape[0]))  # documents each query is scored against
        loss = part_loss(part_scores(self.dense_weight, self.sparse_weight))
        terms[name] = loss.detach()
        if self.part_loss_weight:  # each part also trained alone (its own softmax over the same documents)
            dense_loss = part_loss(part_scores(self.dense_weight, 0.0))
            sparse_loss = part_loss(part_scores(0.0, self.sparse_weight))
            terms["dense_" + name], terms["sparse_" + name] = dense_loss.detach(), sparse_loss.detach()
            loss = loss + self.part_loss_weight * (dense_loss + sparse_loss)
        loss = loss * scale  # DDP averages gradients over ranks; the gathered documents make up for it
        if self.flops_query:
            reg = flops_regularizer(q_bow)
            terms["flops_query"] = reg.detach()
            loss = loss + self.flops_query * reg
        if self.flops_doc:
            reg = flops_regularizer(d_bow)
            terms["flops_doc"] = reg.detach()
            loss = loss + self.flops_doc * reg
        if self.bow_loss_weight:  # this process's own texts: no gather, so no world-size scale
            terms["bow_loss_query"], terms["bow_loss_doc"] = q_own.detach(), d_own.detach()
            loss = loss + self.bow_loss_weight * (q_own + d_own)
        return {"loss": loss, **terms}
