"""The DupMAE pre-training model (RetroMAE-2, Xiao et al., ACL 2023, section 3, and the authors' code).

One forward pass of a BERT-style masked LM on the encoder-masked input gives the hidden states
``H`` (B, L, D), ``h_cls = H[:, 0]`` and the MLM logits ``Z`` (B, L, V). Three losses share them:

- ``L_mlm`` (eq. 3): cross-entropy of ``Z`` on the encoder-masked positions (a batch-level token mean);
- ``L_dec`` (eqs. 4-6, "[CLS] decoding"): one fresh transformer layer whose queries come from
  ``h_cls + position`` and whose keys/values come from the *unmasked* sequence (slot 0 = raw h_cls),
  under the collator's per-row visibility matrix, predicting every content token through the shared
  MLM head;
- ``L_bow`` (eqs. 7-8, "ordinary-token decoding"): ``mu = max_t Z[:, t]`` over ordinary tokens
  (:func:`dupmae_ir.modeling.bow.max_pool_linear_with_mlm`), one vocabulary softmax, cross-entropy against
  the bag-of-words target.

Total (authors' code): ``L = L_dec + 0.1 * L_bow + L_mlm``; the paper writes ``L_mlm + L_dec + L_bow``.
:class:`DupMAEOptions` selects between the documented paper-vs-code differences; the code's behaviour
is the default. Only the masked LM (encoder + MLM head) is kept after pre-training.

Cost: ``Z`` is computed once, block by block, and shared by ``L_mlm`` and ``L_bow``; it is never
stored (only the softmax gradient of the masked rows and the max-pool's arg-max positions are), and
one pair of matrix products serves both losses in the backward pass
(:func:`~dupmae_ir.modeling.bow.max_pool_linear_with_mlm`). The decoder's head runs only on content
positions, with the loss fused into it (:func:`fused_linear_cross_entropy`): no (N, V) logits kept.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .bow import max_pool_linear_with_mlm
from .losses import bag_of_words_loss

PRESETS = ("code", "paper")


@dataclass
class DupMAEOptions:
    """The documented differences between the paper and the authors' code (code = default)."""

    bow_loss_weight: float = 0.1  # code 0.1; paper 1.0 (eq. 9)
    bow_normalize: bool = True  # code: target 1/m per distinct token; paper eq. 8: unnormalised sum over set(X)
    bow_pool_masked: bool = True  # code: encoder-masked positions enter the max-pool; paper: excluded
    decoder_init_std: float = 0.02  # fresh init of the decoder layer

    @classmethod
    def preset(cls, name: str) -> DupMAEOptions:
        if name == "code":
            return cls()
        if name == "paper":
            return cls(bow_loss_weight=1.0, bow_normalize=False, bow_pool_masked=False)
        raise ValueError(f"preset={name!r}; valid: {PRESETS}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DupMAEOutput:
    """Total loss and its three terms (scalars)."""

    loss: torch.Tensor
    mlm_loss: torch.Tensor
    dec_loss: torch.Tensor
    bow_loss: torch.Tensor

    def __getitem__(self, key):  # the HF Trainer reads outputs["loss"]
        return getattr(self, key)

    def keys(self):
        return ("loss", "mlm_loss", "dec_loss", "bow_loss")


class EnhancedDecoderLayer(nn.Module):
    """One BERT-shaped layer with separate query and key/value streams (RetroMAE "enhanced decoding").

    Parameter names follow a Hugging Face ``BertLayer`` (``attention.self.{query,key,value}``,
    ``attention.output.{dense,LayerNorm}``, ``intermediate.dense``, ``output.{dense,LayerNorm}``).
    The attention residual is the query stream; then the usual feed-forward sub-block.
    """

    def __init__(self, config, init_std: float = 0.02):
        super().__init__()
        D, inner = config.hidden_size, config.intermediate_size
        self.num_heads = config.num_attention_heads
        self.head_dim = D // self.num_heads
        self.attention_dropout = config.attention_probs_dropout_prob
        eps = config.layer_norm_eps
        self.attention = nn.ModuleDict({
            "self": nn.ModuleDict({"query": nn.Linear(D, D), "key": nn.Linear(D, D), "value": nn.Linear(D, D)}),
            "output": nn.ModuleDict({"dense": nn.Linear(D, D), "LayerNorm": nn.LayerNorm(D, eps=eps)}),
        })
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(D, inner)})
        self.output = nn.ModuleDict({"dense": nn.Linear(inner, D), "LayerNorm": nn.LayerNorm(D, eps=eps)})
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        from transformers.activations import ACT2FN

        self.act = ACT2FN[config.hidden_act]
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
        """query, key_value: (B, L, D); visibility: (B, L, L), [b, i, j] = i may see j -> (B, L, D)."""
        B, L, D = query.shape
        att = self.attention["self"]

        def heads(x):  # (B, L, D) -> (B, h, L, d)
            return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(att["query"](query)), heads(att["key"](key_value)), heads(att["value"](key_value))
        # additive mask as BERT's: 0 where visible, finfo.min where hidden (a fully hidden padding row
        # stays finite: uniform attention, ignored by the loss)
        bias = (~visibility.bool())[:, None].to(q.dtype) * torch.finfo(q.dtype).min  # (B, 1, L, L)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.attention_dropout if self.training else 0.0)  # (B, h, L, d)
        ctx = ctx.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        out = self.attention["output"]
        hidden = out["LayerNorm"](self.dropout(out["dense"](ctx)) + query)  # residual = query stream
        inter = self.act(self.intermediate["dense"](hidden))  # (B, L, I)
        return self.output["LayerNorm"](self.dropout(self.output["dense"](inter)) + hidden)  # (B, L, D)


class DupMAEForPretraining(nn.Module):
    """A BERT-style ``*ForMaskedLM`` (``mlm.bert`` + ``mlm.cls``) plus the [CLS] decoder layer."""

    def __init__(self, mlm: nn.Module, options: DupMAEOptions | None = None):
        super().__init__()
        if not (hasattr(mlm, "bert") and hasattr(mlm, "cls")):
            raise TypeError(f"{type(mlm).__name__}: DupMAE needs a BERT-style masked LM (.bert encoder, .cls MLM head)")
        self.mlm = mlm
        self.options = options or DupMAEOptions()
        self.decoder = EnhancedDecoderLayer(mlm.config, self.options.decoder_init_std)
        self.chunk_rows = 1024  # rows of (rows, V) logits alive at once in the decoder's fused head + loss
        self.chunk_elements = 2**26  # logits alive at once in the encoder's fused head (256 MB in fp32)

    @property
    def config(self):
        return self.mlm.config

    def forward(self, encoder_input_ids, encoder_attention_mask, encoder_labels, decoder_input_ids,
                decoder_attention_mask, decoder_labels, bag_word_weight) -> DupMAEOutput:
        """The collator's batch (:class:`dupmae_ir.data.collator.DupMAECollator`) -> losses."""
        opts = self.options
        # (B, L, D)
        hidden = self.mlm.bert(input_ids=encoder_input_ids, attention_mask=encoder_attention_mask).last_hidden_state
        h_cls = hidden[:, 0]  # (B, D)
        head = self.mlm.cls.predictions
        transformed = head.transform(hidden)  # (B, L, D)

        # L_mlm (eq. 3) and L_bow (eqs. 7-8) share one computation of the logits Z (B, L, V):
        # mu = max over ordinary tokens of the raw logits; L_mlm = token mean over encoder-masked positions
        masked = encoder_labels != -100  # (B, L)
        pool_mask = encoder_attention_mask if opts.bow_pool_masked else encoder_attention_mask * (~masked)  # (B, L)
        mu, mlm_loss = max_pool_linear_with_mlm(transformed, head.decoder.weight, head.decoder.bias, pool_mask,
                                                encoder_labels, self.chunk_elements)  # (B, V), ()
        target = bag_word_weight if opts.bow_normalize else (bag_word_weight > 0).to(mu.dtype)  # (B, V)
        bow_loss = bag_of_words_loss(mu, target).mean()  # one softmax over V

        # L_dec (eqs. 4-6): query stream from h_cls + positions, key/value stream from the unmasked text
        B, L = decoder_input_ids.shape
        embeddings = self.mlm.bert.embeddings
        query = embeddings(inputs_embeds=h_cls[:, None].expand(B, L, h_cls.shape[-1]))  # (B, L, D)
        key_value = embeddings(input_ids=decoder_input_ids)  # (B, L, D)
        key_value = torch.cat([h_cls[:, None].to(key_value.dtype), key_value[:, 1:]], dim=1)  # slot 0 = raw h_cls
        decoded = self.decoder(query, key_value, decoder_attention_mask)  # (B, L, D)
        content = decoder_labels != -100  # (B, L)
        head = self.mlm.cls.predictions
        transformed = head.transform(decoded[content])  # (N, D): the head only where there is a label
        dec_loss = fused_linear_cross_entropy(transformed, head.decoder.weight, head.decoder.bias,
                                              decoder_labels[content], self.chunk_rows)

        loss = dec_loss + opts.bow_loss_weight * bow_loss + mlm_loss
        return DupMAEOutput(loss=loss, mlm_loss=mlm_loss.detach(), dec_loss=dec_loss.detach(),
                            bow_loss=bow_loss.detach())


def fused_linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, labels: torch.Tensor,
                               chunk_rows: int = 1024) -> torch.Tensor:
    """``cross_entropy(x @ weight.T + bias, labels)`` (token mean) without keeping (N, V) logits.

    x: (N, D); weight: (V, D); bias: (V,); labels: (N,) all valid. The logits are formed ``chunk_rows``
    rows at a time; each chunk's softmax gradient is turned into the gradients of x, weight and bias
    at once (the forward pass does the backward's two matrix products), so neither the logits nor a
    log-softmax copy is stored and no (N, V) gradient is materialised. Same FLOPs as the plain
    version, fewer passes over (N, V) memory; used for the [CLS] decoder's loss over all content
    tokens (eq. 6). Respects autocast (matrix products in the autocast dtype, softmax in fp32).
    """
    if labels.numel() == 0:
        return (x.sum() + weight.sum() + bias.sum()) * 0.0
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad)
    return _FusedLinearCE.apply(x, weight, bias, labels, chunk_rows, dtype, needs_grad)


class _FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, labels, chunk_rows, dtype, needs_grad):
        N = x.shape[0]
        with torch.autocast(x.device.type, enabled=False):
            w, b = weight.to(dtype), bias.to(dtype)  # no copy in fp32
            total = torch.zeros((), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device)
            if needs_grad:
                grad_x = torch.empty_like(x)
                grad_w = torch.zeros_like(weight)
                grad_b = torch.zeros_like(bias)
            for start in range(0, N, chunk_rows):
                xc = x[start:start + chunk_rows].to(dtype)  # (c, D)
                yc = labels[start:start + chunk_rows]  # (c,)
                logits = torch.addmm(b, xc, w.t())  # (c, V)
                logits = _upcast(logits)
                lse = torch.logsumexp(logits, dim=-1)  # (c,)
                total += (lse - logits.gather(1, yc[:, None]).squeeze(1)).sum()
                if not needs_grad:
                    continue
                probs = logits.sub_(lse[:, None]).exp_()  # (c, V) softmax, in place
                probs[torch.arange(len(yc), device=x.device), yc] -= 1.0  # d(sum CE)/d logits
                probs = probs.div_(N).to(dtype)  # d(mean CE)/d logits
                grad_x[start:start + chunk_rows] = (probs @ w).to(x.dtype)  # (c, D)
                grad_w += (probs.t() @ xc).to(weight.dtype)  # (V, D)
                grad_b += probs.sum(0).to(bias.dtype)  # (V,)
        if needs_grad:
            ctx.save_for_backward(grad_x, grad_w, grad_b)
        return total / N

    @staticmethod
    def backward(ctx, grad_output):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        g = grad_output.to(grad_x.dtype)
        return grad_x * g, grad_w * g, grad_b * g, None, None, None, None


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32 for the softmax; fp32/fp64 unchanged (no copy)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
