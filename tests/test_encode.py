"""Encoding and one-pass indexing on a SciFact slice with a tiny random checkpoint (fast tier).

Real components throughout: the tokenizer, FAISS, Anserini (subprocess) and Pyserini's searchers.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, faiss_vectors, lucene_impact_postings, run_cli, stop_when, write_corpus_slice

SLICE = 160


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OPENAI_API_KEY="unused",
               PYTHONPATH=str(ROOT))
    return env


@pytest.fixture(scope="module")
def slice_corpus(scifact_dir, tmp_path_factory) -> Path:
    """The first SLICE SciFact docs as a BEIR-style corpus file (title, text kept apart)."""
    return write_corpus_slice(scifact_dir, tmp_path_factory.mktemp("slice") / "corpus.jsonl", SLICE)


@pytest.fixture(scope="module")
def slice_texts(slice_corpus):
    from dupmae_ir.data import doc_text, resolve

    docs = list(resolve(slice_corpus).iter_docs())
    return [d.id for d in docs], [doc_text(d) for d in docs]


@pytest.fixture(scope="module")
def slice_index(slice_corpus, tiny_checkpoint, tmp_path_factory) -> Path:
    from dupmae_ir.encode import encode_corpus

    out = tmp_path_factory.mktemp("idx") / "slice"
    encode_corpus(slice_corpus, out, encoder=tiny_checkpoint, batch_size=16, dtype="fp32", chunk_size=50,
                  progress=False)
    return out


def _cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "dupmae_ir.encode", *args, "--no-progress"], env=_env(),
                          capture_output=True, text=True, cwd=ROOT, **kw)


# ------------------------------------------------------------------------------------------------
def test_encoder_sorted_batches_match_single_batch(tiny_checkpoint, slice_texts):
    from dupmae_ir.inference import DupMAEEncoder

    enc = DupMAEEncoder(str(tiny_checkpoint))
    texts = slice_texts[1][:24]
    one = enc.encode_docs(texts)  # one padded batch
    many = enc.encode_docs(texts, batch_size=5)  # length-sorted, dynamic padding
    np.testing.assert_allclose(one.dense, many.dense, atol=1e-5)
    assert one.impacts == many.impacts or all(
        set(a) == set(b) and max(abs(a[k] - b[k]) for k in a) <= 1 for a, b in zip(one.impacts, many.impacts))


def test_packed_pool_equals_padded_pool():
    import torch

    from dupmae_ir.modeling.bow import max_pool_head, max_pool_head_packed

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50)
    hidden = torch.randn(3, 7, 8)  # (B, L, D)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1, 1] + [0] * 5])
    with torch.no_grad():
        a, b = max_pool_head(hidden, mask, head, 3), max_pool_head_packed(hidden, mask, head, 2)  # (B, V)
        assert torch.allclose(a, b, atol=1e-6)  # matmul blocking differs: last-bit rounding only


def test_packed_bert_head_bf16_keeps_exact_top_entries():
    """A BERT MLM head takes the split path (transform once, decoder cast once, bias after the max): fp32
    equals the padded pool; under bf16 autocast the top ``exact_topk`` entries are the fp32 values."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from dupmae_ir.modeling.bow import exact_top_entries, max_pool_head, max_pool_head_packed

    torch.manual_seed(0)
    head = BertForMaskedLM(BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64)).cls.eval()
    hidden = torch.randn(3, 9, 32)  # (B, L, D)
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1, 1] + [0] * 7])
    with torch.inference_mode():
        ref = max_pool_head(hidden, mask, head)  # (B, V) fp32
        assert torch.allclose(max_pool_head_packed(hidden, mask, head, rows=4), ref, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rough = max_pool_head_packed(hidden, mask, head, rows=4)
            exact = exact_top_entries(rough, hidden, mask, head, 20)
    assert rough.dtype == torch.bfloat16 and exact.dtype == torch.float32
    top = exact.topk(20, dim=1).indices  # (B, 20)
    assert torch.allclose(exact.gather(1, top), ref.gather(1, top), atol=1e-5)
    assert not torch.allclose(rough.float().gather(1, top), ref.gather(1, top), atol=1e-5)  # bf16 alone is not
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # the padded form (GPUs)
        padded = exact_top_entries(max_pool_head(hidden, mask, head), hidden, mask, head, 20, texts=2)
    top = padded.topk(20, dim=1).indices
    assert torch.allclose(padded.gather(1, top), ref.gather(1, top), atol=1e-5)


def test_dtype_auto_follows_measurement():

    from dupmae_ir.precision import cpu_has_fast_bf16, resolve_dtype

    expected = "bf16" if cpu_has_fast_bf16() else "fp32"
    assert resolve_dtype("auto", "cpu") == expected
    with pytest.raises(ValueError, match="valid"):
        resolve_dtype("fp8", "cpu")


def test_int8_head_keeps_dense_exact_and_impacts_close(scifact_dir):
    """``--dtype int8-head`` quantises only the MLM head: the real default backbone's dense vectors stay
    the fp32 ones bit for bit, and the bag-of-words keeps nearly the same top terms."""
    import warnings

    import torch

    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.encode.__main__ import build_parser
    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.precision import DTYPES, resolve_dtype

    texts = [doc_text(d) for _, d in zip(range(12), resolve(str(scifact_dir)).iter_docs())]
    ref = DupMAEEncoder("default", dtype="fp32").encode_docs(texts, keep_weights=True, batch_size=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch 2.13 deprecates quantized tensor creation
        enc = DupMAEEncoder("default", dtype="int8-head")
    assert enc.dtype_name == "int8-head"
    assert "quantized" in type(enc.model.mlm.cls.predictions.decoder).__module__
    assert not any("quantized" in type(m).__module__ for m in enc.model.mlm.bert.modules())
    got = enc.encode_docs(texts, keep_weights=True, batch_size=6)
    assert np.array_equal(got.dense, ref.dense)
    assert not torch.equal(got.weights, ref.weights)  # the head did change
    top = lambda row: set(sorted(row, key=row.get, reverse=True)[:50])  # noqa: E731
    overlap = [len(top(a) & top(b)) / 50 for a, b in zip(ref.impacts, got.impacts)]
    assert min(overlap) >= 0.85 and sum(overlap) / len(overlap) >= 0.93, overlap
    with pytest.raises(ValueError, match="CPU only"):
        resolve_dtype("int8-head", "cuda")
    dtype_flag = next(a for a in build_parser()._actions if a.dest == "dtype")
    assert tuple(dtype_flag.choices) == DTYPES


def test_slice_index_layout_and_ids(slice_index, slice_texts):
    ids, _ = slice_texts
    meta = json.loads((slice_index / "dupmae_index.json").read_text())
    assert meta["docs"] == SLICE and meta["corpus"].endswith("corpus.jsonl")
    for key in ("doc_scale", "query_scale", "doc_topk", "query_topk", "activation", "encoder", "dtype",
                "dupmae_ir_version", "created"):
        assert key in meta
    assert meta["retriever"]["doc_scale"] == meta["doc_scale"]
    _, docids = faiss_vectors(slice_index)
    assert docids == ids  # corpus order
    assert meta["impact"]["anserini_counters"]["indexed"] == SLICE
    assert 50 < meta["impact"]["anserini_peak_rss_mib"] < 4096  # the indexer's own peak (JVM inside), measured
    assert not list(slice_index.parent.glob(".slice*"))  # no work or temp folders left


def test_pyserini_searchers_match_toolkit_scores(slice_index, slice_texts, tiny_checkpoint, scifact_dir):
    """FaissSearcher: scores = q . d to 1e-4; LuceneImpactSearcher: scores = integer dot product."""
    from dupmae_ir.java import start_jvm

    start_jvm()  # a Java 21, before any pyserini import
    from pyserini.search.faiss import FaissSearcher
    from pyserini.search.lucene import LuceneImpactSearcher

    from dupmae_ir.data import resolve
    from dupmae_ir.java import raise_max_clause_count
    from dupmae_ir.pyserini_encoders import DupMAEImpactQueryEncoder, DupMAEQueryEncoder

    raise_max_clause_count()  # queries keep every positive weight (query_topk None): > 1024 terms
    ids, texts = slice_texts
    qenc = DupMAEQueryEncoder(str(tiny_checkpoint))
    docs = qenc.encoder.encode_docs(texts, batch_size=16)
    queries = list(resolve(scifact_dir).queries("test").values())[:8]
    dense_searcher = FaissSearcher(str(slice_index / "dense"), qenc)
    impact_searcher = LuceneImpactSearcher(str(slice_index / "impact"), DupMAEImpactQueryEncoder(qenc.encoder),
                                           min_idf=-1)
    for q in queries:
        expected = docs.dense @ qenc.encode(q)  # (N,)
        hits = dense_searcher.search(q, k=10)
        assert [h.docid for h in hits] == [ids[i] for i in np.argsort(-expected, kind="stable")[:10]] or \
            np.allclose([h.score for h in hits], np.sort(expected)[::-1][:10], atol=1e-4)
        for h in hits:
            assert abs(h.score - expected[ids.index(h.docid)]) < 1e-4
        qimp = qenc.encoder.encode_queries([q]).impacts[0]
        exact = np.array([sum(w * d.get(t, 0) for t, w in qimp.items()) for d in docs.impacts])  # (N,)
        hits = impact_searcher.search(q, k=10)
        assert len(hits) == min(10, int((exact > 0).sum()))
        for h in hits:
            assert h.score == exact[ids.index(h.docid)]
        assert min(h.score for h in hits) >= np.sort(exact)[::-1][len(hits) - 1]


@pytest.mark.slow
def test_stock_pyserini_encode_gives_same_dense_vectors(slice_corpus, slice_index, tiny_checkpoint, tmp_path):
    """`python -m pyserini.encode ... --encoder-class auto --pooling cls` on the same checkpoint."""
    from dupmae_ir.data import doc_text, resolve

    n = 40
    inp = tmp_path / "in"
    inp.mkdir()
    with open(inp / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, d in enumerate(resolve(slice_corpus).iter_docs()):
            if i == n:
                break
            f.write(json.dumps({"id": d.id, "text": doc_text(d)}) + "\n")
    cmd = [sys.executable, "-m", "dupmae_ir.pyserini_run", "encode",
           "input", "--corpus", str(inp), "--fields", "text",
           "output", "--embeddings", str(tmp_path / "emb"), "--to-faiss",
           "encoder", "--encoder", str(tiny_checkpoint), "--encoder-class", "auto", "--pooling", "cls",
           "--fields", "text", "--dimension", "32", "--device", "cpu", "--batch-size", "8", "--max-length", "256"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import faiss

    index = faiss.read_index(str(tmp_path / "emb" / "index"))
    theirs = index.reconstruct_n(0, index.ntotal)  # (n, 32)
    their_ids = (tmp_path / "emb" / "docid").read_text().split()
    ours, our_ids = faiss_vectors(slice_index)
    assert their_ids == our_ids[:n]
    np.testing.assert_allclose(theirs, ours[:n], atol=1e-4)


def test_empty_impact_vectors_keep_their_ids(tiny_checkpoint, tmp_path):
    """A document whose impacts all quantise to 0 (here: every one, tiny doc_scale) stays in Lucene."""
    from dupmae_ir.encode import EMPTY_TOKEN, encode_corpus
    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.modeling.model import RepresentationConfig

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                              for i, t in enumerate(["alpha beta", "", "gamma"])))
    enc = DupMAEEncoder(str(tiny_checkpoint), config=RepresentationConfig(doc_scale=1e-9))
    out = encode_corpus(corpus, tmp_path / "out", encoder=enc, progress=False)
    meta = json.loads((out / "dupmae_index.json").read_text())
    assert meta["docs"] == 3 and meta["empty_text_docs"] == 1 and meta["empty_impact_docs"] == 3
    assert meta["impact"]["anserini_counters"]["indexed"] == 3
    assert meta["impact"]["empty_placeholder_token"] == EMPTY_TOKEN
    assert faiss_vectors(out)[1] == ["d0", "d1", "d2"]


def test_failure_leaves_nothing_under_final_name(tiny_checkpoint, tmp_path):
    from dupmae_ir.data import DataError
    from dupmae_ir.encode import encode_corpus

    corpus = tmp_path / "bad.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "text": "fine"}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        encode_corpus(corpus, tmp_path / "out", encoder=str(tiny_checkpoint), dtype="fp32", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_options_are_clear(tiny_checkpoint, tmp_path, slice_corpus):
    from dupmae_ir.encode import encode_corpus
    from dupmae_ir.errors import UserError

    with pytest.raises(ValueError, match="shard-id"):
        encode_corpus(slice_corpus, tmp_path / "o", encoder=str(tiny_checkpoint), shard_id=2, shard_num=2)
    with pytest.raises(UserError, match="valid"):
        encode_corpus(slice_corpus, tmp_path / "o", encoder=str(tiny_checkpoint), faiss="ivf")
    proc = run_cli("encode", "--output", tmp_path / "o", "--no-progress")
    assert proc.returncode == 2 and "--corpus" in proc.stderr


@pytest.mark.slow
def test_resume_after_kill_gives_identical_indexes(slice_corpus, slice_index, tiny_checkpoint, tmp_path):
    """Kill a CLI run after some chunks, restart the same command: same indexes as an uninterrupted run."""
    out = tmp_path / "resumed"
    args = ["--corpus", str(slice_corpus), "--encoder", str(tiny_checkpoint), "--output", str(out),
            "--dtype", "fp32", "--batch-size", "16", "--chunk-size", "50"]
    proc = subprocess.Popen([sys.executable, "-m", "dupmae_ir.encode", *args, "--no-progress"], env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = tmp_path / ".resumed.partial" / "chunks"
    try:  # held with SIGSTOP once two chunks are done, then killed in that state
        stop_when(proc, lambda: len(list(chunks.glob("*.done"))) >= 2, 300, "two finished chunks")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()  # nothing under the final name
    finished_before = len(list(chunks.glob("*.done")))
    assert finished_before >= 2
    done = _cli(args)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "dupmae_index.json").read_text())
    assert meta["resumed_chunks"] >= 2 and meta["docs"] == SLICE
    _assert_same_indexes(out, slice_index)


@pytest.mark.slow  # three encodes, each with its Anserini build (~12 s)
def test_shards_then_merge_equal_single_run(slice_corpus, slice_index, tiny_checkpoint, tmp_path):
    from dupmae_ir.encode import encode_corpus, merge_shards
    from dupmae_ir.errors import UserError

    shards = [encode_corpus(slice_corpus, tmp_path / f"s{i}", encoder=str(tiny_checkpoint), dtype="fp32",
                            batch_size=16, chunk_size=50, shard_id=i, shard_num=2, progress=False) for i in (1, 0)]
    with pytest.raises(UserError, match="every id"):
        merge_shards(shards[:1], tmp_path / "bad")
    merged = run_cli("encode", "merge", "--inputs", *shards, "--output", tmp_path / "merged")
    assert merged.returncode == 0, merged.stderr[-3000:]
    _assert_same_indexes(tmp_path / "merged", slice_index)


def _assert_same_indexes(a: Path, b: Path):
    """Same FAISS vectors (bitwise) and docids; same Lucene impact postings (every doc's stored id and
    every term's postings list with its impacts)."""
    va, ia = faiss_vectors(a)
    vb, ib = faiss_vectors(b)
    assert ia == ib and np.array_equal(va, vb)
    assert lucene_impact_postings(a / "impact", SLICE) == lucene_impact_postings(b / "impact", SLICE)


@pytest.mark.slow
def test_encode_queries_formats_work_with_stock_pyserini(slice_index, tiny_checkpoint, scifact_dir, tmp_path):
    """Pre-encoded queries: Pyserini's own QueryEncoder / CachedDataQueryEncoder read them, and stock
    `python -m pyserini.search.hybrid` runs on them with no patching."""
    from dupmae_ir.data import resolve
    from dupmae_ir.encode import encode_queries
    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.java import start_jvm

    start_jvm()
    from pyserini.encode import QueryEncoder
    from pyserini.encode._cached_data import CachedDataQueryEncoder

    queries = dict(list(resolve(scifact_dir).queries("test").items())[:6])
    enc = DupMAEEncoder(str(tiny_checkpoint))
    qdir = encode_queries(queries, enc, tmp_path / "q", max_impact_terms=300)
    ref = enc.encode_queries(list(queries.values()))
    dense, impact = QueryEncoder(str(qdir / "dense")), CachedDataQueryEncoder(str(qdir / "impact.jsonl"))
    meta = json.loads((qdir / "dupmae_queries.json").read_text())
    assert meta["queries"] == 6 and meta["max_impact_terms"] == 300
    for i, text in enumerate(queries.values()):
        np.testing.assert_array_equal(dense.encode(text), ref.dense[i])
        vec = impact.encode(text)
        assert len(vec) == min(300, len(ref.impacts[i])) and all(ref.impacts[i][t] == w for t, w in vec.items())
        assert min(vec.values()) >= sorted(ref.impacts[i].values(), reverse=True)[len(vec) - 1]
    run = tmp_path / "run.txt"
    cmd = [sys.executable, "-m", "dupmae_ir.pyserini_run", "search.hybrid",
           "dense", "--index", str(slice_index / "dense"), "--encoded-queries", str(qdir / "dense"),
           "sparse", "--index", str(slice_index / "impact"), "--impact", "--encoder", str(qdir / "impact.jsonl"),
           "--min-idf", "-1",
           "fusion", "--alpha", "0.0001",
           "run", "--topics", str(qdir / "topics.tsv"), "--output", str(run), "--hits", "5"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = run.read_text().splitlines()
    assert {line.split()[0] for line in lines} == set(queries) and len(lines) == 30


def test_tokenizer_threads_default_on_for_gpu_encoding_only():
    from dupmae_ir.encode.__main__ import tokenizer_parallelism

    assert tokenizer_parallelism("cuda") == "true" and tokenizer_parallelism("cuda:1") == "true"
    assert tokenizer_parallelism("cpu") == "false"
