"""``torchrun --nproc_per_node=2 -m dupmae_ir.encode`` (gloo, CPU): each process encodes a share of the
chunks, rank 0 builds the indexes, and they equal a one-process run's; a killed rank's rerun resumes."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, faiss_vectors, lucene_impact_postings, stop_when, write_corpus_slice

pytestmark = pytest.mark.slow  # torchrun with two processes, four times (~3 minutes)
N_DOCS = 400
CHUNK = 8


@pytest.fixture(scope="module")
def corpus(scifact_dir, tmp_path_factory) -> Path:
    return write_corpus_slice(scifact_dir, tmp_path_factory.mktemp("dist") / "corpus.jsonl", N_DOCS)


def _args(corpus, ckpt, out):
    return ["--corpus", str(corpus), "--encoder", str(ckpt), "--output", str(out), "--dtype", "fp32",
            "--chunk-size", str(CHUNK), "--batch-size", "8", "--device", "cpu", "--no-progress"]


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
                PYTHONPATH=str(ROOT))


def _torchrun(corpus, ckpt, out) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
            str(29500 + random.randrange(2000)), "-m", "dupmae_ir.encode", *_args(corpus, ckpt, out)]


@pytest.fixture(scope="module")
def reference(corpus, tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "index"
    proc = subprocess.run([sys.executable, "-m", "dupmae_ir.encode", *_args(corpus, tiny_checkpoint, out)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _assert_same(a: Path, b: Path) -> None:
    (va, ia), (vb, ib) = faiss_vectors(a), faiss_vectors(b)
    assert ia == ib and np.array_equal(va, vb)
    assert lucene_impact_postings(a / "impact", N_DOCS) == lucene_impact_postings(b / "impact", N_DOCS)


def test_two_processes_build_the_one_process_indexes(corpus, tiny_checkpoint, reference, tmp_path):
    out = tmp_path / "index"
    proc = subprocess.run(_torchrun(corpus, tiny_checkpoint, out), cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_same(out, reference)
    meta = json.loads((out / "dupmae_index.json").read_text())
    assert meta["world_size"] == 2 and [r["rank"] for r in meta["ranks"]] == [0, 1]
    n_chunks = -(-N_DOCS // CHUNK)
    assert [r["chunks"] for r in meta["ranks"]] == [len(range(0, n_chunks, 2)), len(range(1, n_chunks, 2))]
    assert sum(r["docs"] for r in meta["ranks"]) == meta["docs"] == N_DOCS
    assert not list(tmp_path.glob(".index.*"))  # no work folder, temporary folder or lock left


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_rank_is_resumed(corpus, tiny_checkpoint, reference, tmp_path):
    out = tmp_path / "index"
    job = subprocess.Popen(_torchrun(corpus, tiny_checkpoint, out), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    chunks = tmp_path / ".index.partial" / "chunks"
    try:  # the whole job held with SIGSTOP once two chunks are done: no rank runs on to the end
        stop_when(job, lambda: len(list(chunks.glob("*.done"))) >= 2, 600, "two finished chunks", group=True)
        workers = _children(job.pid)
        assert workers, "the job has no rank to kill"
        os.kill(workers[-1], signal.SIGKILL)  # one rank dies; torchrun then stops the job
        os.killpg(job.pid, signal.SIGCONT)
        assert job.wait(timeout=300) != 0
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    finished = len(list(chunks.glob("*.done")))
    assert finished >= 2 and not (out / "dupmae_index.json").exists()
    rerun = subprocess.run(_torchrun(corpus, tiny_checkpoint, out), cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    meta = json.loads((out / "dupmae_index.json").read_text())
    assert meta["resumed_chunks"] >= finished  # nothing finished before the kill was encoded again
    _assert_same(out, reference)


def test_eval_under_torchrun_equals_one_process(scifact_dir, tiny_checkpoint, tmp_path):
    """``torchrun --nproc_per_node=2 -m dupmae_ir.eval beir``: both processes encode a share of the
    collection into one index, rank 0 alone searches, scores and reports, and every score equals a
    one-process eval's."""
    import shutil

    data = tmp_path / "data" / "scifact"  # a BEIR name; here the first N_DOCS documents
    (data / "qrels").mkdir(parents=True)
    write_corpus_slice(scifact_dir, data / "corpus.jsonl", N_DOCS)
    shutil.copy(scifact_dir / "queries.jsonl", data / "queries.jsonl")
    shutil.copy(scifact_dir / "qrels" / "test.tsv", data / "qrels" / "test.tsv")

    def command(prefix: list[str], root: Path) -> list[str]:
        return [*prefix, "-m", "dupmae_ir.eval", "beir", "--datasets", "scifact", "--data-dir", str(tmp_path / "data"),
                "--encoder", str(tiny_checkpoint), "--no-bm25", "--doc-max-length", "64", "--hits", "100",
                "--output", str(root / "eval"), "--index-root", str(root / "indexes"), "--runs", str(root / "runs")]

    one = subprocess.run(command([sys.executable], tmp_path / "one"), cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(command([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                  "--master_port", str(29500 + random.randrange(2000))], tmp_path / "two"),
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    results = [json.loads(next((tmp_path / r / "eval" / "beir").glob("*/results/scifact.json")).read_text())
               for r in ("one", "two")]
    assert results[0]["scores"] == results[1]["scores"] and set(results[1]["scores"]) == {"dense", "impact", "hybrid"}
    meta = json.loads(next((tmp_path / "two" / "indexes").glob("*/scifact/dupmae_index.json")).read_text())
    assert meta["world_size"] == 2 and sum(r["docs"] for r in meta["ranks"]) == N_DOCS
    assert len(list((tmp_path / "two" / "eval" / "beir").glob("*/report.md"))) == 1
