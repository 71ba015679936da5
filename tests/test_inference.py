"""The encoder leaves the model alone: the max-pool route is a PoolingPlan passed to each forward (no
flags set on the model), int8 quantises a copy, a precision is a name, and checkpoints that name the
activation by its old name ("relu") still read."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

TEXTS = ["statins lower cardiovascular mortality", "a", "bone marrow stem cells differentiate into neurons in vitro"]


def _batch(tok, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_pooling_plans_agree_and_the_model_holds_no_flags(tiny_checkpoint):
    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.modeling.model import DupMAEModel, PoolingPlan

    model, tok = DupMAEModel.from_pretrained(tiny_checkpoint)
    ids, mask = _batch(tok, TEXTS)
    with torch.inference_mode():
        padded = model(ids, mask)[1]  # (B, V) the default plan
        packed = model(ids, mask, PoolingPlan(packed=True))[1]  # (B, V) per text, no padding
        plain = model(ids, mask, PoolingPlan(fused=False))[1]
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, padded)
    before = set(vars(model))
    enc = DupMAEEncoder.from_model(model, tok, "cpu", "bf16")
    assert enc.pooling == PoolingPlan(packed=True, exact_topk=max(model.config.doc_topk, model.config.query_topk))
    assert set(vars(model)) == before  # the encoder set no attribute on the model
    assert not any(hasattr(model, name) for name in ("packed_pool", "exact_topk", "fused_head"))


def test_int8_encoders_quantise_a_copy(tiny_checkpoint):
    import warnings

    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.modeling.model import DupMAEModel

    model, tok = DupMAEModel.from_pretrained(tiny_checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates torch.ao.quantization
        head = DupMAEEncoder.from_model(model, tok, "cpu", "int8-head")
        full = DupMAEEncoder.from_model(model, tok, "cpu", "int8")
    quantised = lambda m: any("quantized" in type(x).__module__ for x in m.modules())  # noqa: E731
    assert quantised(head.model.mlm.cls) and quantised(full.model.mlm.bert)
    assert not quantised(model)  # the caller's model is as it was
    assert head.dtype == head.dtype_name == "int8-head"


def test_a_precision_is_a_name():
    from dupmae_ir.modeling.model import DupMAEModel  # noqa: F401  (torch loaded either way)
    from dupmae_ir.precision import DTYPES, autocast_dtype, resolve_dtype, training_precision

    assert all(isinstance(resolve_dtype(d, "cpu"), str) for d in DTYPES if d != "fp16")
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype("fp32") is None
    assert training_precision("auto", use_cpu=True) == resolve_dtype("auto", "cpu")  # one auto rule
    with pytest.raises(ValueError, match="not a concrete precision"):
        autocast_dtype("auto")


def test_exact_searcher_takes_precision_names(tiny_checkpoint):
    from dupmae_ir.modeling.model import DupMAEModel
    from dupmae_ir.search.exact import ExactSearcher

    model, tok = DupMAEModel.from_pretrained(tiny_checkpoint)
    with pytest.raises(ValueError, match="valid"):
        ExactSearcher(model, tok, dtype=torch.bfloat16)
    searcher = ExactSearcher(model, tok, dtype="fp32", device="cpu").index(["a", "b", "c"], TEXTS, progress=False)
    run = searcher.search({"q": "stem cells"}, k=2)
    assert [len(run[m]["q"]) for m in ("dense", "impact", "hybrid")] == [2, 2, 2]


def test_old_activation_name_still_reads(tiny_checkpoint, tmp_path):
    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.modeling.bow import ACTIVATIONS, activate
    from dupmae_ir.modeling.model import CONFIG_NAME, RepresentationConfig

    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoint, old)
    config = json.loads((old / CONFIG_NAME).read_text())
    assert config["activation"] == "plain_relu"  # what a new checkpoint says
    (old / CONFIG_NAME).write_text(json.dumps({**config, "activation": "relu"}))  # what an old one says
    assert RepresentationConfig.load(old).activation == "plain_relu"
    a, b = (DupMAEEncoder(str(p)).encode_docs(TEXTS, keep_weights=True) for p in (tiny_checkpoint, old))
    assert a.impacts == b.impacts and torch.equal(a.weights, b.weights)
    mu = torch.randn(2, 7)
    assert torch.equal(activate(mu, "relu"), torch.relu(mu)) and torch.equal(activate(mu, "plain_relu"), torch.relu(mu))
    assert torch.equal(activate(mu, "log1p_relu"), torch.log1p(torch.relu(mu)))
    with pytest.raises(ValueError, match=str(ACTIVATIONS).replace("(", r"\(").replace(")", r"\)")):
        RepresentationConfig(activation="softplus")
