"""Queries/s of hybrid search: ``dupmae_ir.search`` vs ``python -m pyserini.search.hybrid``, same
indexes, same queries, same fusion (DupMAE sum: alpha = 1/(s_q*s_d), no normalisation), one run.

Measured (wall clock of each command, JVM and model start-up included, and each run's agreement):

1. ``python -m dupmae_ir.search --mode hybrid`` (live query encoding, batched, threaded);
2. ``python -m dupmae_ir.pyserini_hybrid`` = stock ``pyserini.search.hybrid`` with live DupMAE query encoders;
3. stock ``python -m pyserini.search.hybrid`` with pre-encoded queries (``dupmae_ir.encode.encode_queries``
   run first; its time is reported separately and added in the "incl. encoding" ratio).

Usage::

    python bench/search.py --index indexes/default/scifact [--topics ../shared/data/beir/scifact] [--report FILE]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _harness import ROOT, Timer, add_report_args, header, markdown_table, portable, run_measured, write_report


def timed(cmd: list[str], env: dict) -> float:
    """Wall seconds of ``cmd`` in its own process (a failure exits with its output)."""
    return run_measured(cmd, env=env)[0]


def agreement(a: dict, b: dict, k: int = 10) -> float:
    """Mean overlap of the top-k docids."""
    qs = [q for q in a if q in b]
    return sum(len({d for d, _ in a[q][:k]} & {d for d, _ in b[q][:k]}) / k for q in qs) / max(1, len(qs))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="a `dupmae_ir.encode` output folder")
    p.add_argument("--topics", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"),
                   help="queries: file, BEIR folder or collection name")
    p.add_argument("--split", default="test")
    p.add_argument("--hits", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    add_report_args(p)
    args = p.parse_args()

    from dupmae_ir.data import resolve
    from dupmae_ir.encode import encode_queries
    from dupmae_ir.index import load_index
    from dupmae_ir.java import java_env
    from dupmae_ir.runs import read_trec

    info = load_index(args.index)
    queries = resolve(args.topics).queries(args.split)
    env = {**java_env(), "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        topics = tmp / "topics.tsv"
        topics.write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
        common_run = ["run", "--topics", str(topics), "--hits", str(args.hits), "--batch-size", str(args.batch_size),
                      "--threads", str(args.threads)]
        fusion = ["fusion", "--alpha", repr(info.alpha), "--hits", str(args.hits)]

        t_ours = timed([py, "-m", "dupmae_ir.search", "--index", args.index, "--topics", str(topics),
                        "--mode", "hybrid", "--hits", str(args.hits), "--batch-size", str(args.batch_size),
                        "--threads", str(args.threads), "--output", str(tmp / "ours.trec")], env)
        t_launcher = timed([py, "-m", "dupmae_ir.pyserini_hybrid",
                            "dense", "--index", str(info.dense), "--encoder", info.encoder, "--encoder-class", "dupmae",
                            "sparse", "--index", str(info.impact), "--impact", "--encoder", f"dupmae:{info.encoder}",
                            "--min-idf", "-1", *fusion, *common_run, "--output", str(tmp / "launcher.trec")], env)
        with Timer() as t:
            encoded = encode_queries(queries, info.encoder, tmp / "encoded")
        t_encode = t.seconds
        dense_q, impact_q = _encoded_paths(tmp / "encoded", encoded)
        t_stock = timed([py, "-m", "pyserini.search.hybrid",
                         "dense", "--index", str(info.dense), "--encoded-queries", str(dense_q),
                         "sparse", "--index", str(info.impact), "--impact", "--encoder", str(impact_q),
                         "--min-idf", "-1", *fusion, *common_run, "--output", str(tmp / "stock.trec")], env)
        ours, launcher, stock = (read_trec(tmp / f"{n}.trec") for n in ("ours", "launcher", "stock"))
    n = len(queries)
    print(f"index {args.index}; {n} queries; hits {args.hits}; batch {args.batch_size}; threads {args.threads}; "
          f"alpha {info.alpha:g}; wall clock incl. start-up")
    print(f"  dupmae_ir.search (live encoding)            {t_ours:7.1f} s  {n / t_ours:7.1f} q/s")
    print(f"  dupmae_ir.pyserini_hybrid launcher (stock CLI, live)  {t_launcher:7.1f} s  {n / t_launcher:7.1f} q/s")
    print(f"  stock pyserini.search.hybrid (pre-encoded)   {t_stock:7.1f} s  {n / t_stock:7.1f} q/s"
          f"  (+ encode_queries {t_encode:.1f} s)")
    print(f"ratio dupmae_ir.search / launcher: {t_launcher / t_ours:.2f}x")
    print(f"ratio dupmae_ir.search / stock pre-encoded: {t_stock / t_ours:.2f}x search only, "
          f"{(t_stock + t_encode) / t_ours:.2f}x incl. query encoding")
    print(f"top-10 agreement with dupmae_ir.search: launcher {agreement(ours, launcher):.4f}, "
          f"stock {agreement(ours, stock):.4f}")
    if args.report:
        table = markdown_table(["route", "wall s", "queries/s", "top-10 agreement with `dupmae_ir.search`"], [
            ("`dupmae_ir.search` (live encoding)", f"{t_ours:.1f}", f"{n / t_ours:.1f}", "-"),
            ("`dupmae_ir.pyserini_hybrid` launcher (stock CLI, live encoding)", f"{t_launcher:.1f}",
             f"{n / t_launcher:.1f}",
             f"{agreement(ours, launcher):.3f}"),
            ("stock `pyserini.search.hybrid`, pre-encoded queries", f"{t_stock:.1f}", f"{n / t_stock:.1f}",
             f"{agreement(ours, stock):.3f}")])
        what = (f"Hybrid search of {n} queries on `{portable(args.index)}` (hits {args.hits}, batch "
                f"{args.batch_size}, {args.threads} threads, alpha {info.alpha:g}), wall clock of each command with "
                "start-up, in one run (`bench/search.py`).")
        ratios = (f"Ratios in favour of `dupmae_ir.search`: {t_launcher / t_ours:.2f}x against the launcher; against "
                  f"stock Pyserini with pre-encoded queries {t_stock / t_ours:.2f}x counting search only, "
                  f"{(t_stock + t_encode) / t_ours:.2f}x once its {t_encode:.1f} s of query encoding is counted.")
        write_report(args.report, header("Hybrid search: dupmae_ir.search against stock Pyserini", what) + "\n"
                     + "\n".join(table) + "\n\n" + ratios)
    return 0


def _encoded_paths(folder: Path, returned) -> tuple[Path, Path]:
    """The dense pre-encoded folder (embedding.pkl) and the impact JSONL written by encode_queries."""
    pkl = sorted(folder.rglob("embedding.pkl"))
    jsonl = sorted(folder.rglob("*.jsonl"))
    if not pkl or not jsonl:
        raise SystemExit(f"encode_queries wrote no embedding.pkl / *.jsonl under {folder} (returned {returned!r})")
    return pkl[0].parent, jsonl[0]


if __name__ == "__main__":
    sys.exit(main())
