"""Benchmark: query latency and throughput of BM25, dense, impact and hybrid search, in one run.

    python bench/latency.py --index IDX --bm25-index BM25_IDX [--topics default --split test]
        [--single 100] [--hits 1000] [--label "recipe final"] [--report eval/latency-scifact.md]

For one collection and one DupMAE index (and a BM25 index of the same corpus):

- start-up: building a ``DupMAESearcher`` (index checks, JVM, FAISS, Lucene, model) and a BM25 searcher;
- single query at a time, 1 thread (torch, FAISS, Lucene): per-query latency p50 / p95 / p99 of each
  system, the DupMAE ones split into query encoding, FAISS, Lucene and fusion;
- batched: batch 64, 2 threads: queries/s of each system over all the topics, with the same split;
- the average number of impact terms per query, and ratios to BM25;
- nDCG@10 of every batched run (when the topics have qrels), and the largest impact terms of one
  example query;
- Lucene alone: the same integer queries through Pyserini's ``LuceneImpactSearcher.batch_search``
  (sorts by score then docid, which scores every posting) against ``ImpactSearcher`` (top-k pruning).

``--query-topk`` / ``--query-min-weight`` set query pruning (default: the index's), so one index gives
the table for old and new query settings.

Timings vary with machine load: compare within one run. ``--report`` writes the table as Markdown
(command, date, machine, commit in its header); ``--append`` adds a section to an existing report.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from _harness import Timer, add_report_args, append_section, header, percentile, write_report

MODES = ("dense", "impact", "hybrid")
STAGES = ("encode", "faiss", "lucene", "fusion")


def single_query(searcher, bm25, queries: dict[str, str], n: int, hits: int) -> dict:
    """Per-query wall time (ms) of each system, one query at a time; DupMAE stage split (ms/query)."""
    items = list(queries.items())[:n]
    out = {}
    for q, t in items[:5]:  # warm-up: first-call costs are start-up, not latency
        bm25.search({q: t}, hits=hits, batch_size=1, progress=False)
        searcher.search_batch([q], [t], MODES, hits=hits)
    times = []
    for q, t in items:
        with Timer() as timer:
            bm25.search({q: t}, hits=hits, batch_size=1, progress=False)
        times.append(1000 * timer.seconds)
    out["bm25"] = {"times": times}
    for mode in MODES:
        before = dict(searcher.timings)
        times = []
        for q, t in items:
            with Timer() as timer:
                searcher.search_batch([q], [t], (mode,), hits=hits)
            times.append(1000 * timer.seconds)
        split = {s: 1000 * (searcher.timings[s] - before[s]) / len(items) for s in STAGES}
        out[mode] = {"times": times, "split": split}
    return out


def batched(searcher, bm25, queries: dict[str, str], hits: int, batch_size: int, qrels: dict) -> dict:
    """Queries/s of each system over all queries, batch ``batch_size``; DupMAE stage split (ms/query);
    nDCG@10 of each run when there are qrels."""
    from dupmae_ir.runs import score_run

    def ndcg(run) -> float | None:
        return score_run(run, qrels, ("nDCG@10",)).values["nDCG@10"] if qrels else None

    out = {}
    with Timer() as timer:
        run = bm25.search(queries, hits=hits, batch_size=batch_size, progress=False)
    out["bm25"] = {"qps": len(queries) / timer.seconds, "ndcg": ndcg(run)}
    for mode in MODES:
        before = dict(searcher.timings)
        with Timer() as timer:
            run = searcher.search_all(queries, (mode,), hits=hits, batch_size=batch_size, progress=False)[mode]
        seconds = timer.seconds
        split = {s: 1000 * (searcher.timings[s] - before[s]) / len(queries) for s in STAGES}
        out[mode] = {"qps": len(queries) / seconds, "split": split, "ndcg": ndcg(run)}
    return out


class _Encoded:
    """A Pyserini query encoder that hands back queries encoded beforehand, so that only Lucene is timed."""

    def __init__(self, table: dict[str, dict[str, int]]):
        self.table = table

    def encode(self, text: str) -> dict[str, int]:
        return self.table[text]


def lucene_only(searcher, queries: dict[str, str], impacts: list[dict], hits: int, threads: int) -> dict:
    """Queries/s of Lucene alone on the same integer queries: Pyserini's LuceneImpactSearcher.batch_search
    and dupmae_ir's ImpactSearcher."""
    from pyserini.search.lucene import LuceneImpactSearcher

    qids, texts = list(queries), list(queries.values())
    stock = LuceneImpactSearcher(str(searcher.info.impact), _Encoded(dict(zip(texts, impacts))))
    with Timer() as timer:
        stock.batch_search(texts, qids, k=hits, threads=threads)
    out = {"pyserini": len(qids) / timer.seconds}
    with Timer() as timer:
        searcher.impact_searcher.batch_search(impacts, hits, threads)
    out["dupmae_ir"] = len(qids) / timer.seconds
    return out


def table(label: str, startup: dict, single: dict, batch: dict, terms: float, n_single: int, n_batch: int,
          lucene: dict, example: str) -> str:
    from dupmae_ir.provenance import command_line, git_commit

    lines = [f"### {label}", "", f"`{command_line()}` at commit {git_commit()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             f"Start-up: DupMAE searcher {startup['dupmae']:.1f} s, BM25 searcher {startup['bm25']:.1f} s. "
             f"Impact terms per query (mean): {terms:.1f}. {example}", "",
             "| system | nDCG@10 | single p50 ms | p95 | p99 | p50 / BM25 | batched q/s | q/s / BM25 "
             "| split, single (ms/query): encode / FAISS / Lucene / fusion | split, batched |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base_p50 = statistics.median(single["bm25"]["times"])
    base_qps = batch["bm25"]["qps"]
    for system in ("bm25", *MODES):
        ts = single[system]["times"]
        p50 = statistics.median(ts)
        split1 = " / ".join(f"{single[system]['split'][s]:.1f}" for s in STAGES) if "split" in single[system] else "-"
        split2 = " / ".join(f"{batch[system]['split'][s]:.2f}" for s in STAGES) if "split" in batch[system] else "-"
        score = batch[system]["ndcg"]
        shown = "-" if score is None else f"{score:.4f}"
        lines.append(f"| {system} | {shown} | {p50:.1f} | {percentile(ts, 95):.1f} | {percentile(ts, 99):.1f} | "
                     f"{p50 / base_p50:.2f} | {batch[system]['qps']:.1f} | {batch[system]['qps'] / base_qps:.2f} | "
                     f"{split1} | {split2} |")
    lines += ["", f"Single: {n_single} queries one at a time, 1 thread. Batched: {n_batch} queries, batch 64, "
                  "2 threads. Hits 1,000 per query in every system; hybrid fuses the top 1,000 of each side.", "",
              f"Lucene alone, the same integer queries, batched: Pyserini `LuceneImpactSearcher.batch_search` "
              f"{lucene['pyserini']:.1f} q/s, `dupmae_ir.search.lucene.ImpactSearcher` {lucene['dupmae_ir']:.1f} q/s "
              f"({lucene['dupmae_ir'] / lucene['pyserini']:.1f}x).", ""]
    return "\n".join(lines)


def main() -> int:
    from dupmae_ir.numbers import positive_int
    from dupmae_ir.precision import TRAINING_DTYPES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="a `dupmae_ir.encode` output folder")
    p.add_argument("--bm25-index", required=True, help="a BM25 index of the same corpus (`dupmae_ir.bm25 --index`)")
    p.add_argument("--topics", default="default", help="queries: collection name, BEIR folder or topics file")
    p.add_argument("--split", default="test")
    p.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--hits", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="threads of the batched measurement")
    p.add_argument("--label", default="DupMAE index", help="the section title in the report")
    add_report_args(p, append=True, help="write (or with --append, extend) this Markdown report")
    p.add_argument("--query-topk", type=int, default=None, help="query pruning: keep N impact terms (default: index's)")
    p.add_argument("--query-min-weight", type=float, default=None,
                   help="query pruning: minimum weight (default: index's)")
    p.add_argument("--ef-search", type=positive_int, default=None,
                   help="HNSW efSearch of the index's dense part (default: the index's)")
    p.add_argument("--dtype", default="fp32", choices=TRAINING_DTYPES, help="query encoding precision")
    p.add_argument("--example", default="0-dimensional biomaterials show inductive properties.",
                   help="a query whose largest impact terms are shown")
    args = p.parse_args()

    import torch

    from dupmae_ir.bm25 import BM25Searcher
    from dupmae_ir.data import resolve
    from dupmae_ir.errors import UserError
    from dupmae_ir.search import DupMAESearcher

    collection = resolve(args.topics)
    queries = collection.queries(args.split)
    try:
        qrels = collection.qrels(args.split)
    except Exception:  # topics without judgements: no nDCG column
        qrels = {}
    torch.set_num_threads(1)
    try:
        with Timer() as timer:
            searcher = DupMAESearcher(args.index, threads=1, dtype=args.dtype, query_topk=args.query_topk,
                                      query_min_weight=args.query_min_weight, ef_search=args.ef_search)
    except UserError as e:  # e.g. --ef-search on an index without a graph
        p.error(str(e))
    startup = {"dupmae": timer.seconds}
    with Timer() as timer:
        bm25 = BM25Searcher(args.bm25_index, threads=1)
    startup["bm25"] = timer.seconds
    enc = searcher.encoder.encode_queries(list(queries.values()), batch_size=64)
    terms = sum(len(v) for v in enc.impacts) / len(enc.impacts)
    top = sorted(searcher.encoder.encode_queries([args.example]).impacts[0].items(), key=lambda kv: -kv[1])
    example = (f"Example query \"{args.example}\": {len(top)} terms, largest "
               + ", ".join(f"`{t}` {w}" for t, w in top[:10]) + ".")

    single = single_query(searcher, bm25, queries, args.single, args.hits)
    torch.set_num_threads(args.threads)
    searcher.threads = bm25.threads = args.threads
    batch = batched(searcher, bm25, queries, args.hits, args.batch_size, qrels)
    lucene = lucene_only(searcher, queries, enc.impacts, args.hits, args.threads)
    example += f" Dense index as searched: {searcher.dense_search}."
    text = table(args.label, startup, single, batch, terms, min(args.single, len(queries)), len(queries), lucene,
                 example)
    print(text)
    if args.report:
        head = header("Query latency and throughput", "BM25 (Pyserini), and DupMAE dense (FAISS), impact (Lucene) "
                      "and hybrid search with `dupmae_ir.search`, on one collection, in one run (`bench/latency.py`).")
        if args.append:
            append_section(args.report, head, text)
        else:
            write_report(args.report, head + "\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
