"""The bag-of-words ("ordinary token") representation: the one home of max-pooling over vocabulary
logits, the non-negative activation, top-k sparsification and integer quantisation.

DupMAE (RetroMAE-2, Xiao et al., ACL 2023), section 3.3/3.4: ``mu = max_{t >= 1} Z[:, t, :]`` over the
MLM-head logits of the ordinary tokens (eq. 7); for retrieval ``mu`` is sparsified to its top-k
entries on documents and scored with an inner product (section 3.4). The paper leaves the activation
for an inverted index open; :data:`ACTIVATIONS` lists the choices.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

# "relu" alone would be ambiguous: sentence-transformers' SpladePooling calls log(1 + relu) "relu"
ACTIVATIONS = ("none", "plain_relu", "log1p_relu")
LEGACY_ACTIVATIONS = {"relu": "plain_relu"}  # the name in checkpoints and indexes written before the rename
PAD_PENALTY = 1000.0  # the authors' code adds -1000 at padding before the max


def max_pool_logits(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``mu[b, v] = max_{t >= 1, non-pad} logits[b, t, v]`` (raw logits, [CLS] excluded).

    logits: (B, L, V); attention_mask: (B, L), 1 = real token. Padding gets -1000 added, exactly as
    the authors' code, so a sequence of only [CLS] still returns finite values.
    """
    penalty = (1.0 - attention_mask[:, 1:, None].to(logits.dtype)) * PAD_PENALTY  # (B, L-1, 1)
    return (logits[:, 1:] - penalty).max(dim=1).values  # (B, V)


def max_pool_linear_with_mlm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pool_mask: torch.Tensor,
                             mlm_labels: torch.Tensor | None = None,
                             chunk_elements: int = 2**26) -> tuple[torch.Tensor, torch.Tensor]:
    """The training hot spot, fused: logits ``Z = x @ weight.T + bias`` (B, L, V) feed both
    ``mu = max_{t >= 1, pool_mask} Z[:, t]`` (eq. 7, exactly :func:`max_pool_logits`) and, in
    pre-training, the MLM cross-entropy on the positions with a label (eq. 3, a token mean over the
    batch). Fine-tuning passes no labels and uses ``mu`` only.

    x: (B, L, D) the MLM-head-transformed hidden states; weight: (V, D); bias: (V,); pool_mask: (B, L),
    1 = may enter the max; mlm_labels: (B, L), -100 = no label, or None. Returns
    ``(mu (B, V), mlm_loss ())`` (0 without labels).

    Z is formed a block of positions at a time (at most ``chunk_elements`` logits alive) and never
    stored: the forward keeps only the arg-max position of every (b, v) and the softmax gradient of
    the labelled rows; the bias, the same at every position, is added after the max. The backward is
    exact: the max sends each (b, v)'s gradient to one position only. When at most a quarter of the
    (b, v) carry a gradient (a ReLU'd bag-of-words in fine-tuning: ~2% active after calibration) they
    are gathered and index-added, and the two (B*L, V) x (V, D) products of plain autograd are skipped
    (``bench/finetune_step.py`` measures it); otherwise (the softmax BoW loss of pre-training)
    each block's logit gradient is rebuilt and goes through those products, once for both losses.
    Respects autocast (products in the autocast dtype, softmax in fp32).
    """
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad)
    B, L, _ = x.shape
    if mlm_labels is None:
        mlm_labels = torch.full((B, L), -100, dtype=torch.long, device=x.device)
    chunk = max(1, chunk_elements // max(1, B * weight.shape[0]))
    return _MaxPoolLinearWithMLM.apply(x, weight, bias, pool_mask, mlm_labels, chunk, dtype, needs_grad)


class _MaxPoolLinearWithMLM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pool_mask, labels, chunk, dtype, needs_grad):
        B, L, D = x.shape
        V = weight.shape[0]
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        mu = torch.full((B, V), float("-inf"), dtype=acc, device=x.device)  # (B, V) running max
        arg = torch.zeros((B, V), dtype=torch.long, device=x.device)  # (B, V) its position
        n_labelled = int((labels != -100).sum())
        total = torch.zeros((), dtype=acc, device=x.device)
        softmax_grads = []  # per block: (selected (B, c) bool, d(sum CE)/dZ rows (k, V))
        with torch.autocast(x.device.type, enabled=False):
            w, b = weight.to(dtype), bias.to(acc)
            for start in range(0, L, chunk):
                end = min(start + chunk, L)
                xc = x[:, start:end].to(dtype)  # (B, c, D)
                # Z without the bias: b[v] is the same at every position, so it is added after the max
                # (same values and arg-max; saves a (B*c, V) bias copy per block)
                # kept in the product's dtype (no (B, c, V) fp32 copy under bf16 autocast): the max of
                # bf16 values is exact; only the pooled values and the labelled rows are widened
                logits = (xc.reshape(-1, D) @ w.t()).view(B, end - start, V)  # (B, c, V)
                sel = labels[:, start:end] != -100  # (B, c)
                if bool(sel.any()):
                    rows = logits[sel].to(acc) + b  # (k, V) copy, taken before the pool penalty below
                    target = labels[:, start:end][sel]  # (k,)
                    lse = torch.logsumexp(rows, dim=-1)  # (k,)
                    total += (lse - rows.gather(1, target[:, None]).squeeze(1)).sum()
                    if needs_grad:
                        rows = rows.sub_(lse[:, None]).exp_()  # softmax, in place
                        rows[torch.arange(len(target), device=x.device), target] -= 1.0
                        softmax_grads.append((start, sel, rows))
                lo = max(start, 1)  # [CLS] (position 0) never pooled
                if lo < end:
                    part = logits[:, lo - start:]  # (B, c', V) view
                    excluded = pool_mask[:, lo:end] == 0  # (B, c')
                    if bool(excluded.any()):
                        part[excluded] -= PAD_PENALTY  # as max_pool_logits: -1000 where not pooled
                    values, index = part.max(dim=1)  # (B, V)
                    values = values.to(acc)
                    better = values > mu
                    mu = torch.where(better, values, mu)
                    arg = torch.where(better, index + lo, arg)
                del logits
            mu = mu + b
        if needs_grad:
            ctx.save_for_backward(x, weight, bias, arg)
            ctx.softmax_grads, ctx.chunk, ctx.dtype, ctx.n_labelled = softmax_grads, chunk, dtype, n_labelled
        mlm_loss = total / max(n_labelled, 1)
        return mu, mlm_loss

    @staticmethod
    def backward(ctx, grad_mu, grad_mlm):
        x, weight, bias, arg = ctx.saved_tensors
        B, L, D = x.shape
        V = weight.shape[0]
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        x_flat = x.reshape(B * L, D)
        grad_x = torch.zeros((B * L, D), dtype=acc, device=x.device)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=x.device)
        grad_b = torch.zeros(V, dtype=acc, device=x.device)
        mlm_scale = (grad_mlm / max(ctx.n_labelled, 1)).to(acc) if grad_mlm is not None and ctx.softmax_grads else None
        # dmu[b, v] reaches only Z[b, arg[b, v], v]. Few non-zero entries (a ReLU'd bag-of-words in
        # fine-tuning): gather + index-add them. Many (the softmax of the pre-training BoW loss): add them
        # to each block's logit gradient and use the matrix products, which are faster then.
        sparse_max = grad_mu is not None and 4 * int(torch.count_nonzero(grad_mu)) <= grad_mu.numel()
        dense_max = grad_mu is not None and not sparse_max
        blocks = {start: (sel, rows) for start, sel, rows in ctx.softmax_grads} if mlm_scale is not None else {}
        with torch.autocast(x.device.type, enabled=False):
            w = weight.to(ctx.dtype)
            for start in range(0, L, ctx.chunk):
                end = min(start + ctx.chunk, L)
                if start not in blocks and not dense_max:
                    continue
                grad = torch.zeros((B, end - start, V), dtype=acc, device=x.device)  # (B, c, V) dL/dZ block
                if start in blocks:
                    sel, rows = blocks[start]
                    grad[sel] = rows * mlm_scale
                if dense_max:
                    inside = (arg >= start) & (arg < end)  # (B, V): the max of (b, v) lies in this block
                    where = (arg - start).clamp(0, end - start - 1)[:, None]  # (B, 1, V)
                    grad.scatter_add_(1, where, (grad_mu.to(acc) * inside)[:, None])  # one entry per (b, v)
                flat = grad.view(-1, V).to(ctx.dtype)  # (B*c, V)
                xc = x[:, start:end].reshape(-1, D).to(ctx.dtype)  # (B*c, D)
                grad_x.view(B, L, D)[:, start:end] += (flat @ w).view(B, end - start, D).to(acc)
                grad_w += (flat.t() @ xc).to(acc)  # (V, D)
                grad_b += grad.sum(dim=(0, 1))
            if sparse_max:
                b_idx, v_idx = grad_mu.nonzero(as_tuple=True)  # (n,), (n,)
                step = max(1, 2**22 // D)
                for s in range(0, len(b_idx), step):
                    bi, vi = b_idx[s:s + step], v_idx[s:s + step]
                    g = grad_mu[bi, vi].to(acc)[:, None]  # (n, 1)
                    flat = bi * L + arg[bi, vi]  # (n,) the arg-max position of each entry
                    grad_x.index_add_(0, flat, g * weight[vi].to(acc))
                    grad_w.index_add_(0, vi, g * x_flat[flat].to(acc))
                    grad_b.index_add_(0, vi, g[:, 0])
        return (grad_x.view(B, L, D).to(x.dtype), grad_w.to(weight.dtype), grad_b.to(bias.dtype),
                None, None, None, None, None)


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


def _bert_head(head):
    """``head.predictions`` when ``head`` is a BERT-style MLM head (``transform`` + a ``decoder`` Linear),
    else None (then it is only called as a whole)."""
    pred = getattr(head, "predictions", None)
    ok = pred is not None and hasattr(pred, "transform") and isinstance(getattr(pred, "decoder", None), torch.nn.Linear)
    return pred if ok else None


def max_pool_head_packed(hidden: torch.Tensor, attention_mask: torch.Tensor,
                         head: Callable[[torch.Tensor], torch.Tensor], rows: int = 256) -> torch.Tensor:
    """:func:`max_pool_head` for inference: same values, no work on padding, less memory traffic.

    hidden: (B, L, D) -> (B, V). The real positions ``1..len-1`` of every text ([CLS] and padding
    excluded) are packed into one (T, D) matrix that goes through the head ``rows`` at a time, across
    texts, each block's logits max-reduced into their texts' rows. Why: the padded version writes,
    penalises and reduces (B, c, V) tensors including padding, which costs as much as the head matmul
    on a CPU, and a head call per text is dominated by call overhead for short texts or small models.
    The max over real positions equals the -1000 padding penalty's result (a padded logit never wins).

    A BERT-style head (``head.predictions.transform`` + ``decoder``) is split: the transform runs once
    over all T rows and the (V, D) decoder weight is cast to the compute dtype once per call, not once
    per block (autocast re-casts a weight at every call: 22% of a bf16 CPU forward went to that copy),
    and its bias is added after the max (no (r, V) bias copy per block). Under bf16/fp16 the result is
    in that precision; :func:`exact_top_entries` then makes the kept entries exact.
    """
    mask = attention_mask.bool().clone()  # (B, L)
    mask[:, 0] = False  # [CLS]
    counts = mask.sum(dim=1)  # (B,)
    if bool((counts < 1).any()):
        raise ValueError("max_pool_head_packed needs at least one position after [CLS]")
    flat = hidden[mask]  # (T, D) real positions, text by text
    n_texts = hidden.shape[0]
    pred = _bert_head(head)
    if pred is not None:
        x = pred.transform(flat)  # (T, D) in the compute dtype
        weight_t = pred.decoder.weight.to(x.dtype).t()  # (D, V): cast once

        def project(s: int, e: int) -> torch.Tensor:
            return x[s:e] @ weight_t  # (r, V); the bias, the same at every position, is added after the max
    else:
        def project(s: int, e: int) -> torch.Tensor:
            return head(flat[s:e])  # (r, V)
    ends = torch.cumsum(counts, 0).tolist()  # texts are contiguous in flat: reduce each one's rows of a block
    starts = [0] + ends[:-1]
    out, text = None, 0
    for s in range(0, flat.shape[0], rows):
        e = min(s + rows, flat.shape[0])
        logits = project(s, e)  # (r, V)
        if out is None:
            out = torch.full((n_texts, logits.shape[1]), float("-inf"), dtype=logits.dtype, device=logits.device)
        while text < n_texts and starts[text] < e:
            a, z = max(starts[text], s) - s, min(ends[text], e) - s
            torch.maximum(out[text], logits[a:z].amax(dim=0), out=out[text])
            if ends[text] > e:  # this text goes on in the next block
                break
            text += 1
    if pred is not None:
        out += pred.decoder.bias.to(out.dtype)  # (V,)
    return out


def exact_top_entries(mu: torch.Tensor, hidden: torch.Tensor, attention_mask: torch.Tensor, head, k: int,
                      texts: int = 64) -> torch.Tensor:
    """``mu`` (B, V), max-pooled under bf16/fp16 (:func:`max_pool_head_packed` or :func:`max_pool_head`)
    -> fp32, with each row's top ``k`` entries (and a margin of k/16 + 8 below them: an entry just
    under the k-th may rise above it in fp32), selected in low precision, recomputed in fp32:
    ``max_t (transform(h_t) . w_v) + b_v`` over the pooled positions of ``hidden`` (B, L, D), ``texts``
    rows at a time (one batched product over the selected rows of the decoder). A head that is not
    BERT-style (no ``predictions.transform`` + ``decoder``), or ``mu`` already in fp32, is returned as it is."""
    pred = _bert_head(head)
    if pred is None or mu.dtype not in (torch.bfloat16, torch.float16):
        return mu
    k = min(k + k // 16 + 8, mu.shape[1])  # a margin: an entry just below the k-th may rise above it in fp32
    index = mu.topk(k, dim=1).indices  # (B, k) selected in low precision
    out = mu.float()
    pooled = attention_mask.bool().clone()  # (B, L)
    pooled[:, 0] = False  # [CLS]
    with torch.autocast(hidden.device.type, enabled=False):
        weight, bias = pred.decoder.weight.float(), pred.decoder.bias.float()
        for s in range(0, mu.shape[0], texts):
            rows = index[s:s + texts]  # (c, k)
            x = pred.transform(hidden[s:s + texts].float())  # (c, L, D)
            z = torch.bmm(x, weight[rows].transpose(1, 2))  # (c, L, k)
            z.masked_fill_(~pooled[s:s + texts, :, None], float("-inf"))
            out[s:s + texts].scatter_(1, rows, z.amax(dim=1) + bias[rows])
    return out


def packed_pool_pays(device: str | torch.device) -> bool:
    """Whether inference should pool with :func:`max_pool_head_packed` (per text, no padding) rather
    than :func:`max_pool_head` (padded batch) on ``device``; both give the same values.

    CPU: packed, which skips the work on padding; GPU: padded, as the per-text loop is bound by kernel
    launches there (measurements: eval/encoding-and-search-speed.md, eval/gpu-h200-session1.md).
    """
    return torch.device(device).type == "cpu"


def canonical_activation(activation: str) -> str:
    """``activation`` under its current name (old checkpoint configs say ``relu`` for ``plain_relu``);
    a ValueError naming the valid ones for anything else."""
    activation = LEGACY_ACTIVATIONS.get(activation, activation)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}; valid: {ACTIVATIONS}")
    return activation


def activate(mu: torch.Tensor, activation: str) -> torch.Tensor:
    """Non-negative weights for an inverted index: ``plain_relu`` (max(0, mu)), ``log1p_relu``
    (log(1 + max(0, mu)), SPLADE's and sentence-transformers' ``relu``), or ``none``."""
    activation = canonical_activation(activation)
    if activation == "none":
        return mu
    if activation == "plain_relu":
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


def sparsify(weights: torch.Tensor, k: int | None, min_weight: float = 0.0) -> torch.Tensor:
    """The entries a text keeps (B, V): its top ``k`` (:func:`topk_sparsify`), then those below
    ``min_weight`` zeroed (query pruning; 0 keeps all)."""
    weights = topk_sparsify(weights, k)  # (B, V)
    if min_weight > 0:
        weights = weights * (weights >= min_weight)  # (B, V) light terms dropped
    return weights


def keep_own_pieces(weights: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``weights`` (B, V) with every entry zeroed that is not a word piece of its row's own text
    (``input_ids`` (B, L) where ``attention_mask`` (B, L) is 1): a query without expansion."""
    own = torch.zeros_like(weights, dtype=torch.bool)  # (B, V)
    own.scatter_(1, input_ids.long() * attention_mask.long(), attention_mask.bool())  # padding -> id 0, False
    return weights * own


def topk_entries(weights: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row (B, V) as ``(values (B, k), indices (B, k))``: what
    :func:`topk_sparsify` keeps, without the dense (B, V) copy."""
    return weights.topk(min(k, weights.shape[-1]), dim=-1)


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


def grounded_share(weights: torch.Tensor, pieces: Sequence[Iterable[int]], k: int = 10) -> list[float | None]:
    """For each row of ``weights`` (B, V), the share of its ``k`` heaviest positive entries whose vocabulary
    id is in that row's ``pieces`` (the word pieces of the text it encodes): 1.0 when the bag-of-words
    weights only the text's own pieces, near 0 when it is latent expansion. A row with fewer positive
    entries counts those; a row with none gives None."""
    values, ids = topk_entries(weights.float(), k)  # (B, k), (B, k)
    shares: list[float | None] = []
    for row_values, row_ids, own in zip(values.tolist(), ids.tolist(), pieces):
        own = set(own)
        top = [i for v, i in zip(row_values, row_ids) if v > 0]
        shares.append(sum(i in own for i in top) / len(top) if top else None)
    return shares
