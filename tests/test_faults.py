"""Faults a hostile new user meets, each run for real through the commands (issue 18).

A user's folders are never deleted or replaced, a run file never holds a malformed line, no pickle is
ever loaded, evaluation averages over the queries that were run, a second writer fails at once, a
killed encode leaves no Anserini process and resumes to the same indexes, and every bad input or
corrupt index file gets one line ``error: <file>: <what> (fix: ...)`` with exit status 2.
Real components throughout: the tokenizer, a tiny random BERT, FAISS, Anserini in its own JVM.
"""
from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, faiss_vectors, lucene_impact_postings, run_cli, wait_for

SLICE = 40


def _env(**extra) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OPENAI_API_KEY="unused",
                PYTHONPATH=str(ROOT), **extra)


cli = run_cli  # the commands in this process where no separate process is needed (conftest.run_cli)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 and, on stderr, one ``error: ... (fix: ...)`` line naming ``words``, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    line = lines[0]
    assert "(fix: " in line, line
    for w in words:
        assert w in line, (w, line)
    return line


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(path: Path) -> list[str]:
    """Hidden siblings ``.NAME.*`` the toolkit creates beside an output (work, temporary, lock)."""
    return sorted(p.name for p in path.parent.glob(f".{path.name}.*"))


@pytest.fixture(scope="module")
def corpus(faults_corpus) -> Path:
    """The first SLICE SciFact docs as a BEIR folder with the test queries and qrels (one per session)."""
    return faults_corpus


@pytest.fixture(scope="module")
def index(faults_index) -> Path:
    return faults_index


def encode_args(corpus, ckpt, out, *extra):
    return ["--corpus", corpus, "--encoder", ckpt, "--output", out, "--dtype", "fp32", "--chunk-size", 16,
            "--no-progress", *extra]


# ------------------------------------------------------------------------------------------------
# 1. outputs: never replace what the toolkit did not write
# ------------------------------------------------------------------------------------------------
def test_user_folder_as_output_is_refused_and_kept(corpus, tiny_checkpoint, tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    (victim / "sub" / "notes.md").write_text("# notes")
    before = snapshot(victim)
    proc = cli("encode", *encode_args(corpus, tiny_checkpoint, victim))
    assert_one_line_error(proc, str(victim), "did not write")
    assert snapshot(victim) == before
    assert leftovers(victim) == []
    proc = cli("encode", "--queries", corpus, "--encoder", tiny_checkpoint, "--output", victim)  # queries only
    assert_one_line_error(proc, str(victim), "did not write")
    assert snapshot(victim) == before and leftovers(victim) == []


def test_parent_folder_as_output_is_refused(corpus, tiny_checkpoint, tmp_path):
    project = tmp_path / "project"
    (project / "work").mkdir(parents=True)
    (project / "data.txt").write_text("precious")
    before = snapshot(project)
    proc = cli("encode", *encode_args(corpus, tiny_checkpoint, ".."), cwd=project / "work")
    assert_one_line_error(proc, str(project), "did not write")
    assert snapshot(project) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_output_that_is_a_file_fails_before_any_work(corpus, tiny_checkpoint, tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("a file")
    start = time.perf_counter()
    proc = cli("encode", *encode_args(corpus, tiny_checkpoint, target))
    assert_one_line_error(proc, str(target), "is a file")
    assert target.read_text() == "a file" and leftovers(target) == []
    nested = target / "index"  # inside a file
    proc = cli("encode", *encode_args(corpus, tiny_checkpoint, nested))
    assert_one_line_error(proc, str(nested), "is a file")
    assert time.perf_counter() - start < 60  # no encode ran (each refusal is an import, not a model run)


def test_an_earlier_index_is_replaced_only_with_overwrite(corpus, tiny_checkpoint, index, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(index, out)
    before = snapshot(out)
    proc = cli("encode", *encode_args(corpus, tiny_checkpoint, out))
    assert_one_line_error(proc, str(out), "--overwrite")
    assert snapshot(out) == before
    proc = cli("encode", *encode_args(corpus, tiny_checkpoint, out, "--overwrite"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta_before = json.loads(before["dupmae_index.json"])
    meta_after = json.loads((out / "dupmae_index.json").read_text())
    assert meta_after["kind"] == "dupmae_index" and meta_after["docs"] == meta_before["docs"] == SLICE
    assert (out / "dense" / "docid").read_bytes() == before["dense/docid"]
    assert leftovers(out) == []


# ------------------------------------------------------------------------------------------------
# 2. ids: one rule from every source, and no malformed run line
# ------------------------------------------------------------------------------------------------
def test_whitespace_query_ids_are_refused_with_file_and_line(corpus, index, tiny_checkpoint, tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tfirst query\nq 1\tdiffusion tensor imaging\n")
    run = tmp_path / "run.trec"
    proc = cli("search", "--index", index, "--topics", topics, "--output", run)
    assert_one_line_error(proc, f"{topics}:2", "'q 1'", "whitespace")
    assert not run.exists()
    jsonl = tmp_path / "queries.jsonl"
    jsonl.write_text(json.dumps({"_id": "q\t2", "text": "x"}) + "\n")
    proc = cli("encode", "--queries", jsonl, "--encoder", tiny_checkpoint, "--output", tmp_path / "q")
    assert_one_line_error(proc, f"{jsonl}:1", "whitespace")
    assert not (tmp_path / "q").exists()


def test_whitespace_ids_in_qrels_and_corpus_files(tmp_path):
    from dupmae_ir.data import DataError, resolve
    from dupmae_ir.data.readers import load_qrels_file

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq 1\t4983\t1\n")
    with pytest.raises(DataError, match=rf"{qrels}:2: field 'query-id': query id 'q 1' contains whitespace"):
        load_qrels_file(qrels)
    qrels.write_text("q1 0 d1 1\nq1 0 d2 1 x\n")  # TREC whitespace layout with a field too many
    with pytest.raises(DataError, match=rf"{qrels}:2: expected .* found 5 field"):
        load_qrels_file(qrels)
    qrels.write_text("q1\td 1\t1\n")  # tab-separated: the space is inside the document id
    with pytest.raises(DataError, match="document id 'd 1' contains whitespace"):
        load_qrels_file(qrels)
    qrels.write_text("q1\t0\td1\t2\nq2 Q0 d2 1\n")  # TREC with tabs or spaces
    assert load_qrels_file(qrels) == {"q1": {"d1": 2}, "q2": {"d2": 1}}
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d\n1", "text": "x"}) + "\n")
    with pytest.raises(DataError, match="contains whitespace"):
        list(resolve(folder).iter_docs())


def test_whitespace_doc_ids_from_ir_datasets_are_refused(scifact_dir, tmp_path):
    """The ir_datasets path applies the same rule (a BEIR zip whose corpus has an id with a newline)."""
    import zipfile

    home = tmp_path / "irds"
    zpath = home / "beir" / "scifact" / "source.zip"
    zpath.parent.mkdir(parents=True)
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("scifact/corpus.jsonl", json.dumps({"_id": "ok1", "title": "", "text": "a"}) + "\n"
                    + json.dumps({"_id": "bad\nid", "title": "", "text": "b"}) + "\n")
        zf.write(scifact_dir / "queries.jsonl", "scifact/queries.jsonl")
        for split in ("train", "test"):
            zf.write(scifact_dir / "qrels" / f"{split}.tsv", f"scifact/qrels/{split}.tsv")
    code = ("from dupmae_ir.data import resolve, DataError\n"
            "try:\n    list(resolve('beir/scifact').iter_docs())\nexcept DataError as e:\n    print(e)\n")
    offline = {k: "http://127.0.0.1:9" for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=_env(IR_DATASETS_HOME=str(home), IR_DATASETS_DL_TRIES="1", **offline))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "beir/scifact document #2" in proc.stdout and "'bad\\nid' contains whitespace" in proc.stdout, proc.stdout


def test_write_trec_refuses_lines_without_six_fields(tmp_path):
    from dupmae_ir.data import DataError
    from dupmae_ir.runs import read_trec, write_trec

    for run, tag in (({"q 1": [("d1", 1.0)]}, "t"), ({"q1": [("d\n1", 1.0)]}, "t"), ({"q1": [("d1", 1.0)]}, "my tag")):
        path = tmp_path / "bad.trec"
        with pytest.raises(DataError, match="6 fields"):
            write_trec(path, run, tag)
        assert not path.exists()
    path = write_trec(tmp_path / "ok.trec", {"q1": [("d1", 2.0), ("d2", 1.0)]}, "t")
    assert read_trec(path) == {"q1": [("d1", 2.0), ("d2", 1.0)]}
    with pytest.raises(Exception, match="--overwrite"):  # an earlier run is replaced only when asked
        write_trec(path, {"q1": []}, "t")
    user = tmp_path / "notes.trec"
    user.write_text("my own file\n")
    with pytest.raises(Exception, match="not written by dupmae_ir"):
        write_trec(user, {"q1": [("d1", 1.0)]}, "t", overwrite=True)
    assert user.read_text() == "my own file\n"


# ------------------------------------------------------------------------------------------------
# 3. no pickle is ever loaded
# ------------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_in_encoded_queries_is_never_loaded(corpus, index, tiny_checkpoint, tmp_path):
    import pickle

    queries = tmp_path / "q"
    proc = cli("encode", "--queries", corpus, "--split", "test", "--encoder", tiny_checkpoint, "--output", queries)
    assert proc.returncode == 0, proc.stderr[-3000:]
    marker = tmp_path / "pwned"
    (queries / "dense" / "embedding.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    run = tmp_path / "run.trec"
    proc = cli("search", "--index", index, "--topics", queries / "topics.tsv", "--encoded-queries", queries,
               "--mode", "dense", "--output", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists(), "a pickle was loaded"
    assert len(run.read_text().splitlines()) > 0
    from dupmae_ir.pyserini_encoders import DupMAEQueryEncoder  # the Pyserini adapter reads the safe files too

    enc = DupMAEQueryEncoder(encoded_query_dir=str(queries / "dense"))
    assert enc.encode(next(iter(enc.embedding))).shape == (32,) and not marker.exists()


def test_query_flags_with_pre_encoded_queries_and_shards_under_torchrun_are_refused(corpus, index, tmp_path):
    """Flags that would be silently ignored are refused before any model loads: query settings with
    pre-encoded queries, and manual shards inside a torchrun world (which shards by rank)."""
    proc = cli("search", "--index", index, "--topics", corpus, "--encoded-queries", tmp_path / "q", "--mode", "dense",
               "--query-topk", "8", "--output", tmp_path / "run.trec")
    assert_one_line_error(proc, "--query-topk", "--encoded-queries")
    assert not (tmp_path / "run.trec").exists()
    proc = cli("encode", "--corpus", corpus, "--output", tmp_path / "idx", "--shard-id", "0", "--shard-num", "2",
               set_env=dict(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0"))
    assert_one_line_error(proc, "--shard-num", "torchrun")
    assert not (tmp_path / "idx").exists()


def test_package_has_no_pickle_reading_call():
    hits = []
    for path in (ROOT / "dupmae_ir").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#")[0]
            if (any(s in code for s in ("read_pickle", "pickle.load", "torch.load("))
                    and "weights_only=True" not in code):
                hits.append(f"{path}:{n}: {line.strip()}")
    assert hits == []


# ------------------------------------------------------------------------------------------------
# 4. evaluation over the queries that were run (pytrec_eval / BEIR)
# ------------------------------------------------------------------------------------------------
def test_judged_query_without_text_is_not_averaged_in():
    import pytrec_eval

    from dupmae_ir.runs import score_run

    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 2, "d1": 1}, "q4": {"d4": 1}, "q5": {"d5": 1}}
    run = {"q1": [("d1", 3.0), ("d9", 1.0)], "q2": [("d9", 2.0), ("d2", 1.0)], "q3": [("d1", 2.0), ("d3", 1.0)],
           "q4": [("d4", 1.0)], "q6": [("d6", 1.0)]}  # q5 judged but not run; q6 run but not judged
    got = score_run(run, qrels, ["nDCG@10"])
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut"}).evaluate({q: dict(h) for q, h in run.items()})
    expected = sum(v["ndcg_cut_10"] for v in ref.values()) / len(ref)
    assert got.values["nDCG@10"] == pytest.approx(expected, abs=1e-9)
    assert got.scored_queries == 4 and got.judged_not_run == ["q5"] and got.run_not_judged == ["q6"]
    assert "1 judged query not run" in got.warning() and "1 run query without judgements" in got.warning()
    run["q2"] = []  # a query that was run but found nothing scores 0 and stays in the mean
    assert score_run(run, qrels, ["nDCG@10"]).scored_queries == 4


# ------------------------------------------------------------------------------------------------
# 5. concurrency and leftovers
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow  # a whole encode in a second process, held and resumed (~10-13 s)
def test_second_writer_fails_at_once_and_the_first_finishes(corpus, tiny_checkpoint, tmp_path):
    out = tmp_path / "shared"
    first = subprocess.Popen([sys.executable, "-m", "dupmae_ir.encode",
                              *map(str, encode_args(corpus, tiny_checkpoint, out))],
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / ".shared.lock").exists(), 120, "the first encode's lock")
        os.kill(first.pid, signal.SIGSTOP)  # hold the first writer mid-run, deterministically
        try:
            second = cli("encode", *encode_args(corpus, tiny_checkpoint, out))
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert_one_line_error(second, str(out), f"another process (pid {first.pid})")
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert json.loads((out / "dupmae_index.json").read_text())["docs"] == SLICE
    assert leftovers(out) == []


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _has_jvm(pid: int) -> bool:
    """Whether process ``pid`` has loaded the JVM (pyjnius maps ``libjvm.so`` when it starts it)."""
    try:
        return "libjvm.so" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_sigkill_during_lucene_build_leaves_no_orphan_and_resumes_identically(corpus, tiny_checkpoint, index,
                                                                                tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dupmae_ir.encode",
                             *map(str, encode_args(corpus, tiny_checkpoint, out))],
                            cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        child = wait_for(lambda: _children_of(proc.pid), 300, "the Anserini child process")[0]
        wait_for(lambda: _has_jvm(child), 300, "the Anserini child's JVM")  # killed during the Lucene build
        proc.kill()
        proc.wait()
        wait_for(lambda: not _alive(child), 30, "the Anserini child to die with its parent")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() and any(n.startswith(".killed.tmp-") for n in leftovers(out)), leftovers(out)
    rerun = cli("encode", *encode_args(corpus, tiny_checkpoint, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert leftovers(out) == []
    meta = json.loads((out / "dupmae_index.json").read_text())
    assert meta["resumed_chunks"] == meta["total_chunks"]  # nothing encoded twice
    (va, ia), (vb, ib) = faiss_vectors(index), faiss_vectors(out)
    assert ia == ib and np.array_equal(va, vb)
    assert lucene_impact_postings(out / "impact", SLICE) == lucene_impact_postings(index / "impact", SLICE)


# ------------------------------------------------------------------------------------------------
# 6. errors: one line naming the file, before the model loads
# ------------------------------------------------------------------------------------------------
def test_truncated_gzip_corpus(corpus, tiny_checkpoint, tmp_path):
    folder = tmp_path / "gz"
    folder.mkdir()
    data = gzip.compress((corpus / "corpus.jsonl").read_bytes())
    (folder / "corpus.jsonl.gz").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    proc = cli("encode", *encode_args(folder, tiny_checkpoint, out))
    assert_one_line_error(proc, str(folder / "corpus.jsonl.gz"), "truncated")
    assert not out.exists()
    assert cli("encode", *encode_args(folder, tiny_checkpoint, out, "--debug")).stderr.count("Traceback") == 1


def _broken_copy(index: Path, tmp_path: Path, name: str, damage) -> Path:
    copy = tmp_path / name
    shutil.copytree(index, copy)
    damage(copy)
    return copy


@pytest.mark.parametrize("case, damage, words", [
    ("provenance", lambda c: (c / "dupmae_index.json").write_text("{broken"), ["dupmae_index.json", "malformed"]),
    ("docids", lambda c: (c / "dense" / "docid").write_text((c / "dense" / "docid").read_text() + "extra\n"),
     ["dense/docid", f"holds {SLICE + 1} document ids", f"{SLICE} vectors"]),
    ("segments", lambda c: [p.unlink() for p in (c / "impact").glob("segments_*")], ["impact", "no segments_N"]),
    ("faiss", lambda c: (c / "dense" / "index").write_bytes(b"\0" * 64), ["dense/index", "FAISS"]),
])
def test_corrupt_index_files_are_named_before_search(corpus, index, tmp_path, case, damage, words):
    broken = _broken_copy(index, tmp_path, case, damage)
    run = tmp_path / "run.trec"
    proc = cli("search", "--index", broken, "--topics", corpus / "queries.jsonl", "--output", run)
    assert_one_line_error(proc, str(broken), *words)
    assert not run.exists()


@pytest.mark.slow  # a whole encode in a child process under a file-size limit (~7-9 s)
def test_disk_full_keeps_the_earlier_index(corpus, tiny_checkpoint, index, tmp_path):
    """A write that fails (RLIMIT_FSIZE stands in for a full disk) is one line, and the index being
    replaced stays whole."""
    out = tmp_path / "full"
    shutil.copytree(index, out)
    before = snapshot(out)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = cli("encode", *encode_args(corpus, tiny_checkpoint, out, "--overwrite"), preexec_fn=limit)
    assert_one_line_error(proc, "File too large")
    assert snapshot(out) == before
    assert not any(n.startswith((".full.tmp-", ".full.old-")) for n in leftovers(out))


def test_bad_input_is_one_line_and_debug_shows_the_traceback(tiny_checkpoint, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": broken}\n')
    out = tmp_path / "out"
    args = ["--corpus", folder, "--encoder", tiny_checkpoint, "--output", out, "--no-progress"]
    assert_one_line_error(cli("encode", *args), f"{folder / 'corpus.jsonl'}:2", "malformed JSON")
    assert not out.exists() and leftovers(out) == [".out.partial"]  # the resumable work folder only
    debug = cli("encode", *args, set_env=dict(DUPMAE_DEBUG="1"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DataError" in debug.stderr


# ------------------------------------------------------------------------------------------------
# 7. auto precision is a function of the hardware
# ------------------------------------------------------------------------------------------------
def test_auto_dtype_is_decided_by_cpu_flags_not_timing(monkeypatch):

    from dupmae_ir import precision as encoder

    flags = set(" ".join(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split())
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert encoder.cpu_has_fast_bf16() is native

    def no_timing():
        raise AssertionError("auto must not time anything")

    monkeypatch.setattr(encoder, "cpu_bf16_speedup", no_timing)
    expected = "bf16" if native else "fp32"
    assert all(encoder.resolve_dtype("auto", "cpu") == expected for _ in range(3))
    assert encoder.training_precision("auto", use_cpu=True) == expected
