"""The DupMAE pre-training model (RetroMAE-2, Xiao et al., ACL 2023, section 3; DUPMAE.md section 2).

One forward pass of a BERT-style masked LM on the encoder-masked input gives the hidden states
``H`` (B, L, D), ``h_cls = H[:, 0]`` and the MLM logits ``Z`` (B, L, V). Three losses share them:

- ``L_mlm`` (eq. 3): cross-entropy of ``Z`` on the encoder-masked positions (a batch-level token mean);
- ``L_dec`` (eqs. 4-6, "[CLS] decoding"): one fresh transformer layer whose queries come from
  ``h_cls + position`` and whose keys/values come from the *unmasked* sequence (slot 0 = raw h_cls),
  under the collator's per-row visibility matrix, predicting every content token through the shared
  MLM head;
- ``L_bow`` (eqs. 7-8, "ordinary-token decoding"): ``mu = max_t Z[:, t]`` over ordinary tokens
  (:func:`dupmae_ir.modeling.bow.max_pool_logits_`), one vocabulary softmax, cross-entropy against
  the bag-of-words target.

Total (authors' code): ``L = L_dec + 0.1 * L_bow + L_mlm``; the paper writes ``L_mlm + L_dec + L_bow``.
:class:`DupMAEOptions` selects between the documented paper-vs-code differences; the code's behaviour
is the default. Only the masked LM (encoder + MLM head) is kept after pre-training.

Cost: ``Z`` is computed once and shared by ``L_mlm`` and ``L_bow``; the padding penalty is applied
in place (no second (B, L, V) tensor) and ``Z`` itself is not kept for backward (only the rows of the
masked positions and the arg-max indices are). The decoder's head runs only on content positions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .bow import max_pool_logits_

PRESETS = ("code", "paper")


@dataclass
class DupMAEOptions:
    """The documented differences between the paper and the authors' code (code = default)."""

    bow_loss_weight: float = 0.1  # code 0.1; paper 1.0 (eq. 9)
    bow_normalize: bool = True  # code: target 1/m per distinct token; paper eq. 8: unnormalised sum over set(X)
    bow_pool_masked: bool = True  # code: encoder-masked positions enter the max-pool; paper: excluded
    decoder_init_std: float = 0.02  # fresh init of the decoder layer

    @classmethod
    def preset(cls, name: str) -> "DupMAEOptions":
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
        D, I = config.hidden_size, config.intermediate_size
        self.num_heads = config.num_attention_heads
        self.head_dim = D // self.num_heads
        self.attention_dropout = config.attention_probs_dropout_prob
        eps = config.layer_norm_eps
        self.attention = nn.ModuleDict({
            "self": nn.ModuleDict({"query": nn.Linear(D, D), "key": nn.Linear(D, D), "value": nn.Linear(D, D)}),
            "output": nn.ModuleDict({"dense": nn.Linear(D, D), "LayerNorm": nn.LayerNorm(D, eps=eps)}),
        })
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(D, I)})
        self.output = nn.ModuleDict({"dense": nn.Linear(I, D), "LayerNorm": nn.LayerNorm(D, eps=eps)})
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

    @property
    def config(self):
        return self.mlm.config

    def forward(self, encoder_input_ids, encoder_attention_mask, encoder_labels, decoder_input_ids,
                decoder_attention_mask, decoder_labels, bag_word_weight) -> DupMAEOutput:
        """The collator's batch (:class:`dupmae_ir.data.collator.DupMAECollator`) -> losses."""
        opts = self.options
        hidden = self.mlm.bert(input_ids=encoder_input_ids, attention_mask=encoder_attention_mask).last_hidden_state  # (B, L, D)
        h_cls = hidden[:, 0]  # (B, D)
        logits = self.mlm.cls(hidden)  # (B, L, V): computed once, shared by L_mlm and L_bow

        # L_mlm (eq. 3): batch-level token mean over encoder-masked positions
        masked = encoder_labels != -100  # (B, L)
        mlm_loss = _token_mean_ce(logits[masked], encoder_labels[masked])  # rows copied before the in-place pool

        # L_bow (eqs. 7-8): mu = max over ordinary tokens of the raw logits, one softmax over V
        pool_mask = encoder_attention_mask if opts.bow_pool_masked else encoder_attention_mask * (~masked)  # (B, L)
        mu = max_pool_logits_(logits, pool_mask)  # (B, V); logits modified in place at excluded positions
        target = bag_word_weight if opts.bow_normalize else (bag_word_weight > 0).to(mu.dtype)  # (B, V)
        bow_loss = -(target * torch.log_softmax(_upcast(mu), dim=-1)).sum(-1).mean()

        # L_dec (eqs. 4-6): query stream from h_cls + positions, key/value stream from the unmasked text
        B, L = decoder_input_ids.shape
        embeddings = self.mlm.bert.embeddings
        query = embeddings(inputs_embeds=h_cls[:, None].expand(B, L, h_cls.shape[-1]))  # (B, L, D)
        key_value = embeddings(input_ids=decoder_input_ids)  # (B, L, D)
        key_value = torch.cat([h_cls[:, None].to(key_value.dtype), key_value[:, 1:]], dim=1)  # slot 0 = raw h_cls
        decoded = self.decoder(query, key_value, decoder_attention_mask)  # (B, L, D)
        content = decoder_labels != -100  # (B, L)
        dec_logits = self.mlm.cls(decoded[content])  # (N, V): the head only where there is a label
        dec_loss = _token_mean_ce(dec_logits, decoder_labels[content])

        loss = dec_loss + opts.bow_loss_weight * bow_loss + mlm_loss
        return DupMAEOutput(loss=loss, mlm_loss=mlm_loss.detach(), dec_loss=dec_loss.detach(), bow_loss=bow_loss.detach())


def _token_mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over rows (N, V) x (N,); 0 (still differentiable) when N = 0."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(_upcast(logits), labels)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32 for the softmax; fp32/fp64 unchanged (no copy)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
