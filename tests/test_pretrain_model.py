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


def test_inplace_max_pool_matches_reference_pool():
    from dupmae_ir.modeling.bow import max_pool_logits, max_pool_logits_

    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50)  # (B, L, V)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1, 1] + [0] * 5])
    expected = max_pool_logits(logits, mask)
    assert torch.equal(max_pool_logits_(logits.clone(), mask), expected)


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
    features = [{"input_ids": tokenizer(t, add_special_tokens=False)["input_ids"], "index": i} for i, t in enumerate(texts)]
    batch = DupMAECollator(tokenizer, max_seq_length=16)(features)
    out = model(**batch)
    for name in ("loss", "mlm_loss", "dec_loss", "bow_loss"):
        assert torch.isfinite(out[name]), name
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
