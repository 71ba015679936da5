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


QUERY_TOPK = 64  # recorded in the index: the searcher must use it (not the checkpoint's default)


def build_reference_index(docs, checkpoint: Path, out: Path, query_topk: int | None = QUERY_TOPK) -> dict:
    """Encode ``docs`` with DupMAEEncoder and write ``out/{dense,impact,dupmae_index.json}``; returns
    ``{docid: {token: int}}`` (the document impacts)."""
    import json
    import subprocess
    import sys

    import faiss
    import numpy as np

    from dupmae_ir.data import doc_text
    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.java import java_env

    enc = DupMAEEncoder(str(checkpoint))
    (out / "dense").mkdir(parents=True)
    vectors = out.parent / f"{out.name}_vectors"
    vectors.mkdir()
    dense, impacts = [], {}
    with open(vectors / "docs.jsonl", "w") as fh:
        for start in range(0, len(docs), 50):
            chunk = docs[start:start + 50]
            batch = enc.encode_docs([doc_text(d) for d in chunk])
            dense.append(batch.dense)
            for d, imp in zip(chunk, batch.impacts):
                impacts[d.id] = imp
                fh.write(json.dumps({"id": d.id, "contents": "", "vector": imp}) + "\n")
    matrix = np.concatenate(dense).astype(np.float32)  # (N, d)
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    faiss.write_index(index, str(out / "dense" / "index"))
    (out / "dense" / "docid").write_text("".join(d.id + "\n" for d in docs))
    subprocess.run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection",
                    "--input", str(vectors), "--index", str(out / "impact"), "--generator",
                    "DefaultLuceneDocumentGenerator", "--threads", "1", "--impact", "--pretokenized"],
                   env=java_env(), check=True, capture_output=True)
    c = enc.config
    (out / "dupmae_index.json").write_text(json.dumps({
        "encoder": str(checkpoint), "config": {"doc_scale": c.doc_scale, "query_scale": c.query_scale,
                                               "doc_topk": c.doc_topk, "query_topk": query_topk,
                                               "activation": c.activation}}))
    return impacts


@pytest.fixture(scope="session")
def reference_slice_index(tmp_path_factory, tiny_checkpoint, scifact_dir):
    """``(index folder, {docid: impacts}, docs)``: the first 300 SciFact documents indexed once per
    session by :func:`build_reference_index` with the tiny checkpoint (test_search reads it, test_eval
    copies it to where eval looks)."""
    from dupmae_ir.data import resolve

    docs = []
    for d in resolve(scifact_dir).iter_docs():
        docs.append(d)
        if len(docs) == 300:
            break
    out = tmp_path_factory.mktemp("search") / "index"
    return out, build_reference_index(docs, tiny_checkpoint, out), docs


@pytest.fixture(scope="session")
def faults_corpus(scifact_dir, tmp_path_factory) -> Path:
    """The fault tests' collection: the first 40 SciFact documents as a BEIR folder with the first six
    test queries and their qrels."""
    return write_beir_slice(scifact_dir, tmp_path_factory.mktemp("faults") / "coll", 40, 6)


@pytest.fixture(scope="session")
def faults_index(faults_corpus, tiny_checkpoint, tmp_path_factory) -> Path:
    """``faults_corpus`` encoded once per session by the real command (the tiny checkpoint, fp32): tests
    that change an index work on a copy."""
    out = tmp_path_factory.mktemp("faults_index") / "index"
    proc = run_cli("encode", "--corpus", faults_corpus, "--encoder", tiny_checkpoint, "--output", out,
                   "--dtype", "fp32", "--chunk-size", 16, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
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


def run_cli(module: str, *args, cwd: Path = ROOT, env: dict | None = None, preexec_fn=None, timeout: float = 600,
            process: bool = False, set_env: dict | None = None):
    """``python -m dupmae_ir.<module> ARGS`` as a ``subprocess.CompletedProcess`` (exit status, stdout,
    stderr). Run in this process through ``errors.run_command`` (as the module's ``__main__`` does),
    which spares each call seconds of imports; a real child process where the test needs one: another
    environment, a ``preexec_fn`` (resource limits), or ``process=True`` (another pid, a kill).
    ``set_env``: variables the command reads when it runs (``DUPMAE_DEBUG``, torchrun's ``RANK``), set in
    this process for the call only."""
    import subprocess
    import sys

    args = [str(a) for a in args]
    if process or env is not None or preexec_fn is not None:
        env = env or dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                          OPENAI_API_KEY="unused", PYTHONPATH=str(ROOT))
        return subprocess.run([sys.executable, "-m", f"dupmae_ir.{module}", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)
    return _run_in_process(module, args, Path(cwd), set_env or {})


def _run_in_process(module: str, args: list[str], cwd: Path, set_env: dict):
    """``main(args)`` of ``dupmae_ir.<module>`` with what ``python -m`` gives it (``sys.argv``, ``cwd``
    as the current folder) and both stdout and stderr captured at the file descriptors too,
    so that what a child process (the Anserini build) prints is seen as it would be from a subprocess.
    An uncaught exception prints its traceback and gives exit status 1, as the interpreter does."""
    import importlib
    import importlib.util
    import io
    import subprocess
    import sys
    import tempfile
    import traceback

    from dupmae_ir.errors import run_command

    name = f"dupmae_ir.{module}"
    spec = importlib.util.find_spec(name)
    mod = importlib.import_module(f"{name}.__main__" if spec.submodule_search_locations else name)
    saved_argv, saved_cwd, saved_streams = sys.argv, os.getcwd(), (sys.stdout, sys.stderr)
    saved_env = {k: os.environ.get(k) for k in set_env}
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved_fds = [os.dup(1), os.dup(2)]
    for stream in saved_streams:
        stream.flush()
    try:
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), write_through=True)
        sys.argv = [mod.__file__, *args]
        os.environ.update(set_env)
        os.chdir(cwd)
        try:
            code = run_command(mod.main, args)
        except SystemExit as e:  # argparse's usage errors and --help
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved_streams
        sys.argv = saved_argv
        for k, v in saved_env.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        os.chdir(saved_cwd)
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
    out, err = (_read_and_close(f) for f in files)
    return subprocess.CompletedProcess([sys.executable, "-m", name, *args], code, out, err)


def _read_and_close(f) -> str:
    f.seek(0)
    text = f.read().decode(errors="replace")
    f.close()
    return text
