"""Shared fixtures. Unit tiers use tiny random BERTs built here; pipeline tiers read real data from
``../shared/data`` (override with DUPMAE_SHARED_DATA)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DUPMAE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("OPENAI_API_KEY", "unused")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}; set DUPMAE_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def scifact_dir(shared_data) -> Path:
    return shared_data / "beir" / "scifact"


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` every 20 ms until it returns a true value (returned) or ``timeout`` seconds pass."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def stop_when(proc, predicate, timeout: float, what: str, group: bool = False) -> None:
    """SIGSTOP ``proc`` (its whole process group with ``group``) as soon as ``predicate()`` holds, so the
    state the caller then inspects and kills in is exactly the state it checked: a fast machine cannot
    run on to the end between the check and the kill."""
    import signal

    def stop(sig):
        os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)

    def held() -> bool:
        assert proc.poll() is None, f"the process ended before {what}"
        stop(signal.SIGSTOP)
        if predicate():
            return True
        stop(signal.SIGCONT)
        return False

    wait_for(held, timeout, what)


def write_corpus_slice(source, path: Path, n: int) -> Path:
    """The first ``n`` documents of collection ``source`` as a BEIR ``corpus.jsonl`` (title, text apart)."""
    import json

    from dupmae_ir.data import resolve

    with open(path, "w", encoding="utf-8") as f:
        for i, d in enumerate(resolve(source).iter_docs()):
            if i == n:
                break
            f.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    return path


def write_beir_slice(source, folder: Path, docs: int, queries: int) -> Path:
    """A BEIR folder: the first ``docs`` documents of ``source``, its first ``queries`` test queries and
    their qrels."""
    import json

    from dupmae_ir.data import resolve

    coll = resolve(source)
    folder.mkdir(parents=True)
    write_corpus_slice(source, folder / "corpus.jsonl", docs)
    topics = dict(list(coll.queries("test").items())[:queries])
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in topics.items()),
                                          encoding="utf-8")
    (folder / "qrels").mkdir()
    qrels = coll.qrels("test")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q in topics for d, r in qrels[q].items()), encoding="utf-8")
    return folder


def build_tiny_checkpoint(folder: Path, seed: int = 0, dense_dim: int | None = None) -> Path:
    """A tiny random BERT masked LM (hidden 32, 2 layers, real 30,522-piece uncased vocab) saved as a
    DupMAE checkpoint folder, with the default backbone's real tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from dupmae_ir.modeling.backbone import load_tokenizer
    from dupmae_ir.modeling.model import DupMAEModel, RepresentationConfig

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=512)
    model = DupMAEModel(BertForMaskedLM(cfg), RepresentationConfig(dense_dim=dense_dim))
    model.save_pretrained(folder, tokenizer=load_tokenizer("default"))
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def scifact_index(scifact_dir, tmp_path_factory) -> Path:
    """The full SciFact corpus (5,183 docs) encoded ONCE per test session with the default backbone
    (``dupmae_ir.encode.encode_corpus``, fp32): ``dense/`` (FAISS flat IP), ``impact/`` (Lucene),
    ``dupmae_index.json``; plus the test queries pre-encoded under ``queries/``
    (``dense/embedding.pkl``, ``impact.jsonl``, ``topics.tsv``). Minutes of CPU: share it, never rebuild.
    Set DUPMAE_SCIFACT_INDEX to a folder built earlier to reuse it across sessions.

    fp32, not ``auto``: on a CPU with fast bf16 (AVX512-BF16/AMX) ``auto`` picks bf16, whose vectors
    depend on the batch a document is encoded in (dot products moved by up to 1e-2 when re-encoded in
    another batch, measured on an AVX512-BF16 host); the tests re-encode documents and compare at 1e-4."""
    from dupmae_ir.data import resolve
    from dupmae_ir.encode import encode_corpus, encode_queries

    reuse = os.environ.get("DUPMAE_SCIFACT_INDEX")
    if reuse and (Path(reuse) / "dupmae_index.json").is_file():
        return Path(reuse)
    out = tmp_path_factory.mktemp("scifact_index") / "index"
    encode_corpus(scifact_dir, out, encoder="default", batch_size=32, dtype="fp32", chunk_size=1024, progress=False)
    encode_queries(resolve(scifact_dir).queries("test"), "default", out / "queries")
    return out


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Restore torch's thread count after each test: Pyserini's FaissSearcher.search calls
    ``faiss.omp_set_num_threads``, which FAISS and torch share, and a test calling it directly would
    slow every later test in the session to one core."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def faiss_vectors(folder: Path):
    """``(vectors (N, d), docids)`` of the FAISS index of an index folder."""
    import faiss

    index = faiss.read_index(str(folder / "dense" / "index"))
    return index.reconstruct_n(0, index.ntotal), (folder / "dense" / "docid").read_text().split()


def lucene_impact_postings(index_dir: Path, docs: int | None = None) -> dict:
    """``{term: sorted [(docid, impact)]}`` of a Lucene impact index, read through Pyserini's index
    reader (every term's postings list with its impacts); ``docs``: the document count it must hold."""
    from dupmae_ir.java import start_jvm

    start_jvm()
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(index_dir))
    out = {}
    for term in reader.terms():
        postings = reader.get_postings_list(term.term, analyzer=None)
        out[term.term] = sorted((reader.convert_internal_docid_to_collection_docid(p.docid), p.tf) for p in postings)
    if docs is not None:
        assert reader.stats()["documents"] == docs
    return out
