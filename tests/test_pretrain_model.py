"""DupMAE pre-training model: the reference test vector, forward/backward on a tiny random BERT,
the paper-vs-code options, and the in-place max-pool."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

CASE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "dupmae-case" / "case.pt"
TERMS = {"L_mlm": "mlm_loss", "L_dec": "dec_loss", "L_bow": "bow_loss", "total": "loss"}


@pytest.fixture(scope="module")
def case():
    if not CASE.is_file():
        pytest.fail(f"reference test vector not found at {CASE}")
    return torch.load(CASE, weights_only=True)


def _case_model(case, **options):
    from transformers import BertConfig, BertForMaskedLM

    from dupmae_ir.modeling.dupmae import DupMAEForPretraining, DupMAEOptions

    cfg = BertConfig(**case["hparams"]["bert_config"])
    cfg._attn_implementation = case["hparams"]["attn_implementation"]
    mlm = BertForMaskedLM(cfg)
    mlm.load_state_dict(case["model_state_dict"], strict=True)
    model = DupMAEForPretraining(mlm, DupMAEOptions(**options))
    model.decoder.load_state_dict(case["decoder_layer_state_dict"], strict=True)
    return model.eval()


def test_reference_case_fp32(case):
    model = _case_model(case)
    with torch.no_grad():
        out = model(**case["batch"])
    for ref, ours in TERMS.items():
        assert abs(float(out[ours]) - case["losses"][ref]) < 1e-5, ref


def test_reference_case_float64(case):
    model = _case_model(case).double()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in case["batch"].items()}
    with torch.no_grad():
        out = model(**batch)
    for ref, ours in TERMS.items():
        assert abs(float(out[ours]) - case["losses_float64"][ref]) < 1e-9, ref


def test_paper_options_change_the_right_terms(case):
    """Each paper-vs-code switch moves the terms it should, and only those."""
    with torch.no_grad():
        code = _case_model(case)(**case["batch"])
        paper_weight = _case_model(case, bow_loss_weight=1.0)(**case["batch"])
        unnormalised = _case_model(case, bow_normalize=False)(**case["batch"])
        excluded = _case_model(case, bow_pool_masked=False)(**case["batch"])
    assert torch.allclose(paper_weight.loss, code.mlm_loss + code.dec_loss + code.bow_loss, atol=1e-5)
    # eq. 8 without 1/m: the target is m / |set| times larger per distinct token
    assert float(unnormalised.bow_loss) > float(code.bow_loss) * 5
    assert torch.equal(unnormalised.mlm_loss, code.mlm_loss) and torch.equal(unnormalised.dec_loss, code.dec_loss)
    assert abs(float(excluded.bow_loss) - float(code.bow_loss)) > 1.7e-4
    assert torch.equal(excluded.mlm_loss, code.mlm_loss)


def test_fused_encoder_head_matches_autograd_reference():
    """max_pool_linear_with_mlm == (max_pool_logits, cross_entropy) of the plain logits, values and
    gradients, over several position blocks (float64)."""
    import torch.nn.functional as F

    from dupmae_ir.modeling.bow import max_pool_linear_with_mlm, max_pool_logits

    torch.manual_seed(0)
    B, L, D, V = 3, 9, 8, 40
    x = torch.randn(B, L, D, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, D, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, dtype=torch.float64, requires_grad=True)
    attention = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 3 + [0] * 6])
    labels = torch.full((B, L), -100)
    labels[0, 2], labels[0, 5], labels[1, 1], labels[1, 4], labels[2, 1] = 3, 7, 11, 3, 39
    pool = attention * (labels == -100)  # the paper option: masked positions excluded
    probe = torch.randn(B, V, dtype=torch.float64)  # weights the gradient of mu

    def grads(mu, mlm):
        (mu * probe).sum().backward(retain_graph=True)
        (2.5 * mlm).backward()
        out = [t.grad.clone() for t in (x, w, b)]
        for t in (x, w, b):
            t.grad = None
        return out

    for pool_mask in (attention, pool):
        for chunk_elements in (B * V * 2, 2**26):  # blocks of 2 positions, then one block
            mu, mlm = max_pool_linear_with_mlm(x, w, b, pool_mask, labels, chunk_elements)
            got = grads(mu, mlm)
            logits = x @ w.T + b  # (B, L, V)
            ref_mu = max_pool_logits(logits, pool_mask)
            sel = labels != -100
            ref_mlm = F.cross_entropy(logits[sel], labels[sel])
            assert torch.allclose(mu, ref_mu, atol=1e-12) and torch.allclose(mlm, ref_mlm, atol=1e-12)
            for g, r in zip(got, grads(ref_mu, ref_mlm)):
                assert torch.allclose(g, r, atol=1e-10)


def test_fused_encoder_head_under_bf16_autocast_matches_bf16_logits():
    """Under bf16 autocast (what --precision bf16 runs) the fused head keeps the logits in bf16 and
    widens only the pooled values and the labelled rows: mu and the MLM loss equal those of the same
    bf16 logits widened to fp32 first (the max of bf16 values is exact in either width)."""
    import torch.nn.functional as F

    from dupmae_ir.modeling.bow import max_pool_linear_with_mlm, max_pool_logits

    torch.manual_seed(0)
    B, L, D, V = 3, 9, 16, 50
    x, w, b = torch.randn(B, L, D), torch.randn(V, D), torch.randn(V)
    attention = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 3 + [0] * 6])
    labels = torch.full((B, L), -100)
    labels[0, 2], labels[1, 4], labels[2, 1] = 3, 11, 39
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mu, mlm = max_pool_linear_with_mlm(x, w, b, attention, labels, chunk_elements=B * V * 2)
    assert mu.dtype == torch.float32 and mlm.dtype == torch.float32
    logits = (x.bfloat16() @ w.bfloat16().T).float() + b  # (B, L, V): the bf16 product, widened
    sel = labels != -100
    assert torch.allclose(mu, max_pool_logits(logits, attention), atol=1e-5)
    assert torch.allclose(mlm, F.cross_entropy(logits[sel], labels[sel]), atol=1e-5)
    fp32_mu, _ = max_pool_linear_with_mlm(x, w, b, attention, labels)
    assert 0 < float((mu - fp32_mu).abs().max()) < 0.2  # bf16 did run, and stays close to fp32


def test_fused_linear_cross_entropy_matches_autograd_reference():
    import torch.nn.functional as F

    from dupmae_ir.modeling.dupmae import fused_linear_cross_entropy

    torch.manual_seed(0)
    x = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(40, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 40, (13,))
    loss = fused_linear_cross_entropy(x, w, b, y, chunk_rows=4)
    (3.0 * loss).backward()
    got = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    ref = F.cross_entropy(x @ w.T + b, y)
    (3.0 * ref).backward()
    assert torch.allclose(loss, ref, atol=1e-12)
    for g, t in zip(got, (x, w, b)):
        assert torch.allclose(g, t.grad, atol=1e-10)


def test_forward_backward_tiny_bert_every_param_gets_grad(tiny_checkpoint):
    """A tiny random BERT on a real collated batch: finite losses, a gradient for every parameter."""
    from dupmae_ir.data.collator import DupMAECollator
    from dupmae_ir.modeling.backbone import load_masked_lm, load_tokenizer
    from dupmae_ir.modeling.dupmae import DupMAEForPretraining

    torch.manual_seed(0)
    tokenizer = load_tokenizer(tiny_checkpoint)
    model = DupMAEForPretraining(load_masked_lm(tiny_checkpoint)).train()
    texts = ["Dense retrieval with a duplex masked auto-encoder.", "Paris is the capital of France.",
             "Bag-of-words targets from ordinary token embeddings improve lexical matching."]
    features = [{"input_ids": tokenizer(t, add_special_tokens=False)["input_ids"], "index": i}
                for i, t in enumerate(texts)]
    batch = DupMAECollator(tokenizer, max_seq_length=16)(features)
    out = model(**batch)
    for name in ("loss", "mlm_loss", "dec_loss", "bow_loss"):
        assert torch.isfinite(out[name]), name
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
