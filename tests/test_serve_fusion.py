"""``python -m dupmae_ir.serve`` on an index whose provenance records the served fusion (``serving =
{mode: hybrid+bm25, bm25_index}``, as ``dupmae_ir.adapt`` writes it): the first 60 SciFact documents
encoded with the tiny random checkpoint and a BM25 index of them. The server says on startup, in
``/status`` and in each answer that it serves hybrid+bm25, and its hits are the normalised fusion of the
model's hybrid run and the BM25 run, computed here from the two runs."""
from __future__ import annotations

import asyncio

import pytest
from conftest import write_corpus_slice
from test_serve import QUERY, Server, get

SLICE = 60


@pytest.fixture(scope="module")
def fusion_index(scifact_dir, tiny_checkpoint, tmp_path_factory):
    from dupmae_ir.bm25 import build_bm25_index
    from dupmae_ir.encode import encode_corpus

    root = tmp_path_factory.mktemp("serve_fusion")
    corpus = root / "coll"
    corpus.mkdir()
    write_corpus_slice(scifact_dir, corpus / "corpus.jsonl", SLICE)
    bm25 = build_bm25_index(corpus, root / "bm25", threads=1, progress=False)
    serving = {"mode": "hybrid+bm25", "bm25_index": str(bm25.resolve()), "command": "python -m dupmae_ir.search ..."}
    index = encode_corpus(corpus, root / "dupmae", encoder=str(tiny_checkpoint), dtype="fp32", chunk_size=32,
                          progress=False, extra_provenance={"serving": serving})
    return index, bm25


def _reference(index, bm25):
    """The model's hybrid run and the BM25 run of QUERY, and their normalised fusion's top 10, as
    pyserini.fusion --method normalize computes it."""
    from dupmae_ir.bm25 import bm25_search
    from dupmae_ir.runs import fuse_normalize
    from dupmae_ir.search import DupMAESearcher

    hybrid = DupMAESearcher(index).search_all({"q": QUERY}, ("hybrid",), hits=1000, progress=False)["hybrid"]["q"]
    bm25_hits = bm25_search(bm25, {"q": QUERY}, hits=1000, progress=False)["q"]
    return hybrid, fuse_normalize([hybrid, bm25_hits], 10)


def _check_answers(status: dict, body: dict, own: dict, hybrid: list, expected: list) -> None:
    assert status["mode"] == "hybrid+bm25" and "hybrid+bm25" in status["modes"]
    assert body["mode"] == "hybrid+bm25" and own["mode"] == "hybrid"
    assert [h["docid"] for h in body["hits"]] == [d for d, _ in expected]
    assert [h["score"] for h in body["hits"]] == pytest.approx([s for _, s in expected], rel=1e-9, abs=1e-12)
    assert [h["docid"] for h in own["hits"]] == [d for d, _ in hybrid[:10]]
    assert [h["score"] for h in own["hits"]] == pytest.approx([s for _, s in hybrid[:10]], rel=1e-9)
    assert [h["docid"] for h in body["hits"]] != [h["docid"] for h in own["hits"]]  # BM25 moved the list


def test_the_service_answers_with_the_fusion_its_index_records(fusion_index):
    """In process: the mode read from the index's provenance (as the command reads it), served by the app."""
    import httpx

    from dupmae_ir.index import load_index
    from dupmae_ir.search import DupMAESearcher
    from dupmae_ir.serve import Service, create_app
    from dupmae_ir.serve.__main__ import served_mode

    index, bm25 = fusion_index
    mode, bm25_index, _ = served_mode(load_index(index).meta, None)
    service = Service(DupMAESearcher(index, bm25_index=bm25_index), {}, mode=mode)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(service)),
                                     base_url="http://127.0.0.1") as c:
            asked = (("/status", {}), ("/search", {"q": QUERY, "k": 10}),
                     ("/search", {"q": QUERY, "k": 10, "mode": "hybrid"}))
            return [(await c.get(path, params=p)).json() for path, p in asked]
    try:
        status, body, own = asyncio.run(main())
    finally:
        service.shutdown()
    _check_answers(status, body, own, *_reference(index, bm25))


@pytest.mark.slow
def test_serve_answers_with_the_fusion_its_index_records(fusion_index, tmp_path):
    """The command itself, as a user starts it: it says on startup that it serves hybrid+bm25."""
    index, bm25 = fusion_index
    server = Server(index, tmp_path).wait()
    try:
        assert "mode hybrid+bm25" in server.out.read_text()  # said on startup
        status, info = get(server.url, "/status")
        assert status == 200
        status, body = get(server.url, "/search", q=QUERY, k=10)  # no mode: the served one
        assert status == 200, body
        _, own = get(server.url, "/search", q=QUERY, k=10, mode="hybrid")
    finally:
        server.stop()
    _check_answers(info, body, own, *_reference(index, bm25))


def test_served_mode_follows_the_provenance_and_the_flag(fusion_index, tmp_path):
    from dupmae_ir.errors import UserError
    from dupmae_ir.serve.__main__ import served_mode

    _, bm25 = fusion_index
    meta = {"serving": {"mode": "hybrid+bm25", "bm25_index": str(bm25)}}
    assert served_mode(meta, None)[:2] == ("hybrid+bm25", str(bm25))
    assert served_mode(meta, "hybrid")[:2] == ("hybrid", None)  # the model's own hybrid, BM25 not loaded
    assert served_mode({}, None)[:2] == ("hybrid", None)  # an index without the record: as before
    gone = {"serving": {"mode": "hybrid+bm25", "bm25_index": str(tmp_path / "moved")}}
    mode, index, why = served_mode(gone, None)
    assert (mode, index) == ("hybrid", None) and "missing" in why
    with pytest.raises(UserError, match="not there"):
        served_mode(gone, "hybrid+bm25")
    with pytest.raises(UserError, match="records no BM25 index"):
        served_mode({}, "hybrid+bm25")


def test_a_service_without_bm25_serves_the_models_hybrid(fusion_index):
    import httpx

    from dupmae_ir.search import DupMAESearcher
    from dupmae_ir.serve import Service, create_app

    index, _ = fusion_index
    service = Service(DupMAESearcher(index), {})
    app = create_app(service)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            return [await c.get("/search", params=p) for p in ({"q": QUERY}, {"q": QUERY, "mode": "hybrid+bm25"})]
    try:
        default, fused = asyncio.run(main())
    finally:
        service.shutdown()
    assert default.status_code == 200 and default.json()["mode"] == "hybrid"
    assert fused.status_code == 422 and "needs a BM25 index" in fused.json()["detail"]
    assert "hybrid+bm25" not in service.status()["modes"] and service.status()["mode"] == "hybrid"
