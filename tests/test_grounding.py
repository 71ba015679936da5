"""The grounded share of a bag-of-words (dupmae_ir.modeling.bow.grounded_share): how many of a query's
heaviest impact terms are word pieces of its own text."""
from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_checkpoint


def test_grounded_share_on_hand_made_query_vectors():
    from dupmae_ir.modeling.bow import grounded_share

    w = torch.zeros(4, 50)
    # query 0: pieces {3, 7, 9}; its 12 positive terms, heaviest first: 7, 40, 3, 41..48, 9 (the 12th, 0.05)
    w[0, [7, 40, 3]] = torch.tensor([5.0, 4.0, 3.0])
    w[0, 41:49] = torch.linspace(2.0, 1.0, 8)
    w[0, 9] = 0.05
    w[0, 20] = -1.0  # negative weights are not terms
    # query 1: three positive terms, two of them its own; query 2: nothing positive; query 3: all its own
    w[1, [1, 2, 30]] = torch.tensor([0.3, 0.2, 0.1])
    w[3, [5, 6]] = torch.tensor([1.0, 2.0])
    pieces = [[3, 7, 9, 7], [2, 30], [1, 2], {5, 6, 8}]
    shares = grounded_share(w, pieces, k=10)
    assert shares == [pytest.approx(2 / 10), pytest.approx(2 / 3), None, 1.0]  # piece 9 is 12th: not counted
    assert grounded_share(w, pieces, k=12)[0] == pytest.approx(3 / 12)  # all 12 positive terms: 9 counts
    assert grounded_share(w, pieces, k=20)[0] == pytest.approx(3 / 12)  # fewer positive terms than k
    assert grounded_share(w[:1], [[40]], k=2) == [0.5]


def test_encoder_grounded_shares_use_the_query_pieces(tmp_path):
    """The encoder's shares: its query weights' top 10, checked against the tokenizer's pieces by string."""
    from dupmae_ir.inference import DupMAEEncoder

    encoder = DupMAEEncoder(str(build_tiny_checkpoint(tmp_path / "tiny", seed=2)))
    texts = ["vitamin d deficiency and bone density", "inductive biomaterials", "what about tuberculosis"]
    shares = encoder.grounded_shares(texts)
    weights = encoder.encode_queries(texts, keep_weights=True).weights  # (3, V)
    for text, share, row in zip(texts, shares, weights):
        own = set(encoder.tokenizer.tokenize(text))
        top = [encoder.tokenizer.convert_ids_to_tokens(int(i)) for i in row.topk(10).indices if row[i] > 0]
        assert share == pytest.approx(sum(t in own for t in top) / len(top))
        assert "[CLS]" not in own
