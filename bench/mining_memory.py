"""Host memory of stage-2 mining under torchrun (issue 36, item 5): the peak of a P-process mining run
against one process, on an index whose dense half is as large as a real corpus's.

    python bench/mining_memory.py --index IDX --queries QUERIES.jsonl [--count 2000000] [--procs 1,2]
                                  [--report eval/mining-memory.md]

The index: a dense-only toolkit index of ``--count`` vectors drawn from the distribution of ``--index``'s
document vectors (``bench/memory_plan.py``'s sampler), with ``--index``'s encoder and provenance, so
that the index, not the runtime, dominates as it does at MS MARCO's size. The Lucene impact half is
left out: Lucene memory-maps its files, and :func:`dupmae_ir.train.mining.mine_under_torchrun` opens
it (and its JVM) in one process per host, as it does FAISS.

Each run is ``torchrun --standalone --nproc-per-node P`` of this script's worker, which calls
``mine_under_torchrun(..., encode=False)`` on the queries; the parent samples the whole process tree
(launcher and workers) every 0.1 s: the sum of VmRSS (shared library pages counted once per process)
and the sum of PSS (``/proc/PID/smaps_rollup``: shared pages split between their processes, what the
host holds), and keeps each peak.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _harness
import memory_plan

MIB = 1024 * 1024


def build_index(source: Path, work: Path, count: int) -> Path:
    """A dense-only index of ``count`` sampled vectors at ``work/index`` (kept and reused)."""
    import faiss

    out = work / "index"
    if (out / "dupmae_index.json").is_file():
        return out
    dist = memory_plan.fit_distribution(source, work)
    tmp = work / "index.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "dense").mkdir(parents=True)
    meta = json.loads((source / "dupmae_index.json").read_text(encoding="utf-8"))
    d = faiss.read_index(str(source / "dense" / "index")).d
    index = faiss.IndexFlatIP(d)
    memory_plan.fill_codes(index, memory_plan.chunks(dist, d, count), count)
    faiss.write_index(index, str(tmp / "dense" / "index"))
    with open(tmp / "dense" / "docid", "w", encoding="utf-8") as fh:
        fh.writelines(f"synthetic-{i}\n" for i in range(count))
    meta.update(docs=count, impact=None, empty_text_docs=0, empty_impact_docs=0,
                dense={**(meta.get("dense") or {}), "docs": count, "faiss": "flat",
                       "bytes": (tmp / "dense" / "index").stat().st_size},
                corpus=f"{count:,} vectors sampled from {source}'s (bench/mining_memory.py)")
    (tmp / "dupmae_index.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    tmp.rename(out)
    return out


def worker(args) -> int:
    """One torchrun process: mine the queries from the index (dense mode, no encoding), as fine-tuning does:
    one process mines through :func:`mine_from_index`, several through :func:`mine_under_torchrun`."""
    import torch.distributed as dist

    from dupmae_ir.data.readers import load_queries_file
    from dupmae_ir.encode.distributed import world
    from dupmae_ir.index import load_index
    from dupmae_ir.train.mining import mine_from_index, mine_under_torchrun

    queries = load_queries_file(args.queries)
    info = load_index(args.index, check=False)
    start = time.time()
    if world() is None:
        run = mine_from_index(args.index, queries, args.depth, mode="dense", progress=False)
    else:
        dist.init_process_group("gloo")
        run = mine_under_torchrun(info.encoder, None, queries, args.depth, Path(args.index), mode="dense",
                                  encode=False, progress=False)
    if world() is None or dist.get_rank() == 0:
        print("MINED " + json.dumps({"queries": len(run), "hits": sum(map(len, run.values())),
                                     "seconds": round(time.time() - start, 1)}), flush=True)
    if world() is not None:
        dist.destroy_process_group()
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for t in os.listdir(f"/proc/{p}/task")
                     for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    return out


def memory_mib(pids: list[int]) -> tuple[float, float]:
    """(sum of VmRSS, sum of PSS) of ``pids`` in MiB."""
    rss = pss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def measure(args, procs: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", __file__,
           "--worker", "--index", str(args.index_dir), "--queries", args.queries, "--depth", str(args.depth)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // procs))}
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak_rss = peak_pss = 0.0
    lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss, pss = memory_mib(tree(proc.pid))
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.1)
    reader.join()
    mined = [json.loads(line[6:]) for line in lines if line.startswith("MINED ")]
    if proc.returncode or not mined:
        raise SystemExit(f"torchrun with {procs} processes failed ({proc.returncode}):\n{''.join(lines[-40:])}")
    out = {"procs": procs, "peak_rss_mib": round(peak_rss), "peak_pss_mib": round(peak_pss),
           "wall_s": round(time.time() - start, 1), **mined[0]}
    print(out, flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", help="a toolkit index whose encoder and vectors the synthetic index takes")
    p.add_argument("--queries", required=True, help="BEIR queries.jsonl: the queries mined")
    p.add_argument("--count", type=int, default=2_000_000, help="vectors in the synthetic dense index")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--about", default="", help="what --index is (how it was made), for the report")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--work", default="encoders/mining-memory")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    _harness.add_report_args(p, "eval/mining-memory.md")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    work = _harness.claim_work_dir(args.work, "mining_memory")
    args.index_dir = build_index(Path(args.index), work, args.count)
    faiss_mib = (args.index_dir / "dense" / "index").stat().st_size / MIB
    rows = [measure(args, int(n)) for n in args.procs.split(",")]
    one = rows[0]
    table = _harness.markdown_table(
        ["processes", "peak host PSS MiB", "vs 1 process", "peak sum of RSS MiB", "vs 1 process", "queries mined",
         "mining s", "wall s"],
        [[r["procs"], f"{r['peak_pss_mib']:,}", f"{r['peak_pss_mib'] / one['peak_pss_mib']:.2f}x",
          f"{r['peak_rss_mib']:,}", f"{r['peak_rss_mib'] / one['peak_rss_mib']:.2f}x", r["queries"],
          f"{r['seconds']:.0f}", f"{r['wall_s']:.0f}"] for r in rows])
    body = [f"Index: {args.count:,} flat vectors ({faiss_mib:,.0f} MiB of FAISS) sampled from the document vectors "
            f"of `{_harness.portable(args.index)}`, dense only; queries: `{_harness.portable(args.queries)}`, "
            f"top {args.depth} each, `mode=dense`. Host threads split evenly between processes (OMP_NUM_THREADS). "
            f"{args.about}",
            "", *table]
    text = _harness.header("Mining under torchrun: host memory against one process",
                           "Peak host memory of `dupmae_ir.train.mining.mine_under_torchrun` (one searcher per "
                           "host) with 1 and more processes (`bench/mining_memory.py`).")
    _harness.write_report(args.report, text + "\n" + "\n".join(body) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
