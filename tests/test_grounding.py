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


def test_keep_own_pieces_zeroes_every_entry_outside_the_row_text():
    from dupmae_ir.modeling.bow import keep_own_pieces

    w = torch.arange(1.0, 21.0).repeat(2, 1)  # (2, 20): every entry positive
    ids = torch.tensor([[1, 5, 7, 2, 0], [1, 9, 2, 0, 0]])  # [CLS]=1 ... [SEP]=2, padding id 0
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    kept = keep_own_pieces(w, ids, mask)
    assert kept[0].nonzero().flatten().tolist() == [1, 2, 5, 7]
    assert kept[1].nonzero().flatten().tolist() == [1, 2, 9]  # padding (id 0) is not a piece of the text
    assert kept[0, 5] == w[0, 5] and kept[1, 9] == w[1, 9]  # kept entries keep their weight


def test_query_terms_own_weights_only_the_query_pieces_and_leaves_dense_and_documents_alone(tmp_path):
    """query_terms="own": every impact term of a query is one of its word pieces (share 1.0, where "all"
    expands), the dense vector and the document side are unchanged; the exhaustive searcher agrees."""
    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.modeling.model import DupMAEModel
    from dupmae_ir.search.exact import ExactSearcher

    path = str(build_tiny_checkpoint(tmp_path / "tiny", seed=2))
    expand = DupMAEEncoder(path)
    own = expand.with_config(query_terms="own")
    texts = ["vitamin d deficiency and bone density", "inductive biomaterials"]
    a, b = expand.encode_queries(texts), own.encode_queries(texts)
    assert (a.dense == b.dense).all()
    for text, full, kept in zip(texts, a.impacts, b.impacts):
        pieces = set(expand.tokenizer.tokenize(text))
        assert kept and set(kept) <= pieces and not set(full) <= pieces  # the tiny model expands; own does not
        assert all(full[t] == kept[t] for t in kept if t in full)  # same weights on the pieces both keep
    assert own.grounded_shares(texts) == [1.0, 1.0]
    assert expand.encode_docs(texts).impacts == own.encode_docs(texts).impacts
    with pytest.raises(ValueError, match="query_terms"):
        expand.with_config(query_terms="some")

    model, tok = DupMAEModel.from_pretrained(path)
    docs = ["bone density falls with vitamin d deficiency", "biomaterials can be inductive", "an unrelated text"]
    runs = {terms: ExactSearcher(model, tok, query_terms=terms).index(["d1", "d2", "d3"], docs, progress=False)
            .search({"q": texts[0]}, k=3, modes=("impact",))["impact"]["q"] for terms in ("all", "own")}
    impacts = dict(zip(["d1", "d2", "d3"], own.encode_docs(docs).impacts))
    expected = {d: sum(w * imp.get(t, 0) for t, w in b.impacts[0].items()) / 100 / 100 for d, imp in impacts.items()}
    for docid, score in runs["own"]:
        assert score == pytest.approx(expected[docid], rel=0.02, abs=0.02)
    assert runs["own"] != runs["all"]
