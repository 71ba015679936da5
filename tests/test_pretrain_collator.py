"""DupMAE pre-training collator: deterministic fields against the reference case, masking statistics
on real text, the bag-of-words target on a hand-made example, reproducibility of the random draws."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

CASE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "dupmae-case" / "case.pt"


@pytest.fixture(scope="module")
def tokenizer():
    from dupmae_ir.modeling.backbone import load_tokenizer

    return load_tokenizer("default")


@pytest.fixture(scope="module")
def features(tokenizer):
    """100 bundled SciFact documents as content ids (real text, real WordPiece)."""
    from dupmae_ir.data import doc_text, resolve

    docs = []
    for i, doc in enumerate(resolve("default").iter_docs()):
        if i == 100:
            break
        docs.append({"input_ids": tokenizer(doc_text(doc), add_special_tokens=False)["input_ids"], "index": i})
    return docs


def collator(tokenizer, **kw):
    from dupmae_ir.data.collator import DupMAECollator

    return DupMAECollator(tokenizer, **kw)


def test_deterministic_fields_match_reference_case(tokenizer):
    case = torch.load(CASE, weights_only=True)
    col = collator(tokenizer, max_seq_length=case["hparams"]["max_seq_length"])
    batch = col([{"input_ids": ids, "index": i} for i, ids in enumerate(case["token_ids"])])
    for key in ("decoder_input_ids", "encoder_attention_mask", "decoder_labels", "bag_word_weight"):
        assert torch.equal(batch[key], case["batch"][key]), key
        assert batch[key].dtype == case["batch"][key].dtype, key
    # random fields obey the rules on the same input
    labelled = batch["encoder_labels"] != -100
    assert torch.equal(batch["encoder_labels"][labelled], case["batch"]["decoder_input_ids"][labelled])


def test_bag_of_words_target_hand_made(tokenizer):
    ids = tokenizer.convert_tokens_to_ids(["the", "cat", "the", "dog"])  # m = 4, 3 distinct
    bow = collator(tokenizer, max_seq_length=16)([{"input_ids": ids, "index": 0}])["bag_word_weight"][0]
    expected = torch.zeros(len(tokenizer))
    expected[ids] = 0.25  # 1/m once per distinct token: "the" is not 0.5
    assert torch.equal(bow, expected)
    assert abs(float(bow.sum()) - 0.75) < 1e-7  # not renormalised


def _words(col, ids_row, n):
    """Word index per position 1..n-2 of one wrapped row."""
    from dupmae_ir.data.collator import whole_word_ids

    return whole_word_ids(col._is_subword[ids_row[1:n - 1]].copy())


def test_encoder_masking_statistics(tokenizer, features):
    col = collator(tokenizer, max_seq_length=128)
    batch = col(features)
    ids, labels = batch["decoder_input_ids"], batch["encoder_labels"]
    corrupted, attention = batch["encoder_input_ids"], batch["encoder_attention_mask"]
    selected = labels != -100
    lengths = attention.sum(1)
    rate = selected.sum(1).float() / lengths.float()  # per example: k = round(0.3 n) pieces, specials counted in n
    assert 0.26 < float(rate.mean()) <= 0.31
    assert not selected[:, 0].any() and not selected[torch.arange(len(lengths)), lengths - 1].any()
    assert torch.equal(labels[selected], ids[selected])
    # whole words: every piece of a selected word is selected
    for b in range(len(features)):
        n = int(lengths[b])
        word = _words(col, ids[b].numpy(), n)
        sel = selected[b, 1:n - 1].numpy()
        for w in np.unique(word[sel]):
            assert sel[word == w].all()
    # 80 / 10 / 10 corruption
    n_sel = int(selected.sum())
    frac_mask = float((corrupted[selected] == tokenizer.mask_token_id).sum()) / n_sel
    frac_kept = float((corrupted[selected] == ids[selected]).sum()) / n_sel
    assert 0.76 < frac_mask < 0.84 and 0.07 < frac_kept < 0.13
    assert torch.equal(corrupted[~selected], ids[~selected])


def test_decoder_visibility_rules(tokenizer, features):
    batch = collator(tokenizer, max_seq_length=128)(features)
    vis, lengths = batch["decoder_attention_mask"], batch["encoder_attention_mask"].sum(1)
    assert vis.dtype == torch.bool
    L = vis.shape[1]
    assert not vis[:, torch.arange(L), torch.arange(L)].any()  # no row sees itself (row 0 included)
    hidden_share = []
    for b in range(vis.shape[0]):
        n = int(lengths[b])
        assert vis[b, 1:n, 0].all()  # every row sees [CLS]
        assert vis[b, torch.arange(n - 1), n - 1].all()  # [SEP] is never in a sampled mask
        assert not vis[b, n:].any() and not vis[b, :, n:].any()  # padding invisible
        hidden_share.append(1 - vis[b, 1:n - 1, 1:n - 1].float().mean().item())
    assert 0.45 < float(np.mean(hidden_share)) < 0.58  # ~0.5 of the content hidden per row
    # rows draw different masks
    assert len({tuple(row.tolist()) for row in vis[0, 1:int(lengths[0]) - 1]}) > 10
    assert torch.equal(batch["decoder_labels"][:, 1:][batch["decoder_labels"][:, 1:] != -100],
                       batch["decoder_input_ids"][:, 1:][batch["decoder_labels"][:, 1:] != -100])


def test_random_draws_keyed_by_seed_epoch_index(tokenizer, features):
    a = collator(tokenizer, max_seq_length=64)(features[:4])
    b = collator(tokenizer, max_seq_length=64)(list(reversed(features[:4])))
    assert torch.equal(a["encoder_input_ids"], b["encoder_input_ids"].flip(0))  # order-independent
    c = collator(tokenizer, max_seq_length=64, epoch=1)(features[:4])
    d = collator(tokenizer, max_seq_length=64, seed=7)(features[:4])
    assert not torch.equal(a["encoder_labels"], c["encoder_labels"])
    assert not torch.equal(a["encoder_labels"], d["encoder_labels"])
