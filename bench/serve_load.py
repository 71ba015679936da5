"""A bounded load test of ``python -m dupmae_ir.serve`` on loopback: latency, throughput, status
classes and the server's memory, written to ``eval/serve-load.md``.

The server starts on a free 127.0.0.1 port (traffic never leaves the machine). After a short
warm-up, ``--clients`` threads (keep-alive connections) send ``--requests`` requests in all, a fixed
mix (seeded): good ``/search`` (every mode, k 10-100, half with each hit's top terms), good
``/explain`` and bad requests (missing, empty and 10,000-word queries, k out of range, unknown mode
and docid). It stops after the last request or ``--max-seconds``, whichever comes first. Reported:
p50/p99 latency (all and per kind), requests/s, the count of each status class (5xx must be 0), and
the server's RSS (``/proc/<pid>/status``) after the warm-up, at its peak and after the run.

Usage::

    python bench/serve_load.py                              # a 60-document SciFact index, built first
    python bench/serve_load.py --index indexes/scifact-1k   # an index built earlier
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

from _harness import ROOT, Timer, add_report_args, machine, percentile, portable, write_report

HOST = "127.0.0.1"  # loopback only, whatever the arguments
SCIFACT = ROOT.parent / "shared" / "data" / "beir" / "scifact"
FALLBACK_QUERIES = ["vitamin D deficiency and cancer risk", "stem cell transplantation and immune deficiency",
                    "birth weight and breast cancer", "statins and cardiovascular mortality"]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def build_small_index(folder: Path, docs: int = 60) -> Path:
    """The first ``docs`` SciFact documents encoded with the default backbone (fp32)."""
    from dupmae_ir.data import resolve
    from dupmae_ir.encode import encode_corpus

    coll = folder / "coll"
    coll.mkdir(parents=True)
    with open(coll / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, d in enumerate(resolve(SCIFACT).iter_docs()):
            if i == docs:
                break
            f.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    return encode_corpus(coll, folder / "index", encoder="default", dtype="fp32", progress=False)


def plan(n: int, queries: list[str], docids: list[str], seed: int) -> list[tuple[str, str]]:
    """``n`` (kind, path?query) requests in a fixed, shuffled mix."""
    rng = random.Random(seed)
    bad = [("/search", {}), ("/search", {"q": ""}), ("/search", {"q": " ".join(["word"] * 10_000)}),
           ("/search", {"q": "a", "k": 0}), ("/search", {"q": "a", "k": 5000}), ("/search", {"q": "a", "mode": "bm25"}),
           ("/explain", {"q": "a", "docid": "no-such-document"}), ("/explain", {"q": "a"}),
           ("/search", {"q": "a", "k": "ten"})]
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.55:
            k = rng.choice([10, 10, 20, 100])
            params = {"q": rng.choice(queries), "k": k, "mode": rng.choice(["hybrid", "dense", "impact"])}
            if rng.random() < 0.5:
                params["terms"] = 8
            out.append(("search", f"/search?{urllib.parse.urlencode(params)}"))
        elif r < 0.75:
            params = {"q": rng.choice(queries), "docid": rng.choice(docids)}
            out.append(("explain", f"/explain?{urllib.parse.urlencode(params)}"))
        else:
            path, params = bad[i % len(bad)]
            out.append(("bad", f"{path}?{urllib.parse.urlencode(params)}"))
    return out


def warm_up(queries: list[str], docids: list[str]) -> list[tuple[str, str]]:
    """One request of each shape (every mode, k 10 and 100, with and without terms, /explain): what the
    server allocates once (JVM heap, allocator pools) is in place before 'before' is measured."""
    shapes = [{"mode": m, "k": k, "terms": t} for m in ("hybrid", "dense", "impact") for k in (10, 100) for t in (0, 8)]
    out = [("warm", f"/search?{urllib.parse.urlencode({'q': queries[i % len(queries)], **s})}")
           for i, s in enumerate(shapes)]
    return out + [("warm", f"/explain?{urllib.parse.urlencode({'q': queries[i], 'docid': docids[i]})}")
                  for i in range(2)]


def start_server(index: str, corpus: str | None, log: Path) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    args = [sys.executable, "-m", "dupmae_ir.serve", "--index", index, "--host", HOST, "--port", "0"]
    out = log.with_suffix(".out")
    with open(out, "w") as o, open(log, "w") as e:
        proc = subprocess.Popen(args + (["--corpus", corpus] if corpus else []), cwd=ROOT, env=env, stdout=o, stderr=e)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        line = next((ln for ln in out.read_text().splitlines() if ln.startswith("serving ")), None)
        if line:
            return proc, urllib.parse.urlsplit(line.split()[1]).port
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not start: {log.read_text()[-3000:]}")


def run_load(port: int, requests: list[tuple[str, str]], clients: int, max_seconds: float,
             on_quarter=None) -> list[tuple]:
    """Send the requests from ``clients`` threads; returns (kind, status or error, seconds) per request.
    ``on_quarter()`` is called when each quarter of the requests is answered."""
    todo: queue.Queue = queue.Queue()
    for item in requests:
        todo.put(item)
    results: list[tuple] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def client():
        conn = http.client.HTTPConnection(HOST, port, timeout=300)
        while time.monotonic() < deadline:
            try:
                kind, path = todo.get_nowait()
            except queue.Empty:
                break
            with Timer() as t:
                try:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException) as e:
                    status = f"error: {type(e).__name__}"
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=300)
            with lock:
                results.append((kind, status, t.seconds))
                if on_quarter and len(results) % max(1, len(requests) // 4) == 0:
                    on_quarter()
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def status_class(status) -> str:
    return f"{status // 100}xx" if isinstance(status, int) else "error"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default=None, help="index folder (default: build a 60-document SciFact one)")
    p.add_argument("--corpus", default=None, help="the index's corpus (default: the one it records)")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=1200, help="stop sending after this long")
    p.add_argument("--seed", type=int, default=0)
    add_report_args(p, default=str(ROOT / "eval" / "serve-load.md"), help="Markdown report ('' for none)")
    args = p.parse_args()

    from dupmae_ir.data import resolve
    from dupmae_ir.index import load_index

    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or str(build_small_index(Path(tmp) / "small"))
        info = load_index(index)
        docids = (info.dense / "docid").read_text().split()
        queries = list(resolve(SCIFACT).queries("test").values()) if SCIFACT.is_dir() else FALLBACK_QUERIES
        load = os.getloadavg()
        with Timer() as t:
            proc, port = start_server(index, args.corpus, Path(tmp) / "serve.err")
        startup = t.seconds
        try:
            rss_start = rss_mib(proc.pid)
            run_load(port, warm_up(queries, docids), 1, 600)
            rss_before = rss_mib(proc.pid)
            peak = [rss_before]
            stop = threading.Event()

            def sample():
                while not stop.wait(0.25):
                    peak.append(rss_mib(proc.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            requests = plan(args.requests, queries, docids, args.seed)
            quarters: list[float] = []
            with Timer() as t:
                results = run_load(port, requests, args.clients, args.max_seconds,
                                   on_quarter=lambda: quarters.append(rss_mib(proc.pid)))
            wall = t.seconds
            stop.set()
            sampler.join()
            rss_after = rss_mib(proc.pid)
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(60)
    load_end = os.getloadavg()

    lat = [r[2] * 1000 for r in results]
    classes = {c: sum(1 for r in results if status_class(r[1]) == c) for c in ("2xx", "4xx", "5xx", "error")}
    kinds = {}
    for kind in ("search", "explain", "bad"):
        ms = [r[2] * 1000 for r in results if r[0] == kind]
        kinds[kind] = (len(ms), percentile(ms, 50), percentile(ms, 99),
                       sorted({str(r[1]) for r in results if r[0] == kind}))
    wrong = [r for r in results if (r[0] == "bad") != (status_class(r[1]) == "4xx")]
    from dupmae_ir.provenance import git_commit

    m = machine()
    commit = git_commit() or "not a git checkout"
    growth = rss_after - rss_before
    lines = [
        "# Serving under load: `python -m dupmae_ir.serve` on loopback",
        "",
        f"`bench/serve_load.py`: {args.clients} concurrent clients (keep-alive), {args.requests} requests in all "
        "(55% `/search` in every mode with k 10-100, half with each hit's top terms; 20% `/explain`; 25% bad "
        "requests), sent to 127.0.0.1 only; after a 14-request warm-up of every request shape. The searcher runs "
        "one request at a time (one worker thread), so latency includes the wait in that queue.",
        "",
        f"- command: `python bench/serve_load.py{' --index ' + portable(args.index) if args.index else ''}"
        f"{'' if args.requests == 500 else ' --requests ' + str(args.requests)}`",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {m.get('cpu')}, {m.get('cores')} CPUs, avx512_bf16 "
        f"{'present' if m.get('avx512_bf16') else 'absent'}; load average {load[0]:.2f} before, {load_end[0]:.2f} "
        "after (the machine is shared)",
        f"- commit: {commit.replace('+dirty', ' (with uncommitted changes)')}",
        f"- index: `{portable(info.root)}`, {len(docids)} documents, encoder `{portable(info.encoder)}`; server "
        f"start-up {startup:.1f} s",
        "",
        "| requests sent | wall s | requests/s | p50 ms | p99 ms | 2xx | 4xx | 5xx | connection errors |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {len(results)} of {args.requests} | {wall:.1f} | {len(results) / wall:.2f} | {percentile(lat, 50):.0f} | "
        f"{percentile(lat, 99):.0f} | {classes['2xx']} | {classes['4xx']} | {classes['5xx']} | {classes['error']} |",
        "",
        "| kind | requests | p50 ms | p99 ms | statuses |",
        "|---|---|---|---|---|",
        *[f"| {k} | {n} | {p50:.0f} | {p99:.0f} | {', '.join(s)} |" for k, (n, p50, p99, s) in kinds.items()],
        "",
        "| server RSS (MiB) | after start | after warm-up (before) | after each quarter of the requests | peak "
        "during | after | growth |",
        "|---|---|---|---|---|---|---|",
        f"| `/proc/<pid>/status` VmRSS | {rss_start:.0f} | {rss_before:.0f} | "
        f"{', '.join(f'{q:.0f}' for q in quarters)} | {max(peak):.0f} | {rss_after:.0f} | "
        f"{growth:+.0f} MiB ({100 * growth / rss_before:+.1f}%) |",
        "",
        f"Server alive after the run: {'yes' if alive else 'NO'}; bad requests answered 4xx and good ones 2xx: "
        f"{'yes' if not wrong else f'NO ({len(wrong)} not)'}.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.report:
        write_report(args.report, report)
    return 0 if classes["5xx"] == 0 and classes["error"] == 0 and alive and not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
