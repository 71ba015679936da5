"""``python -m dupmae_ir.bm25``: the BM25 baseline with Pyserini (BEIR flat: contents = title + text)."""
from __future__ import annotations

import sys
from contextlib import nullcontext

from ..cli import (
    CommandParser,
    HelpFormatter,
    add_debug_flag,
    default_threads,
    nonnegative_float,
    positive_int,
    unit_float,
)
from ..errors import run_command
from ..runs import claim_run_file, write_trec
from . import bm25_search, build_bm25_index


def main(argv: list[str] | None = None) -> int:
    p = CommandParser(prog="python -m dupmae_ir.bm25",
                                description="BM25 baseline with Pyserini (BEIR flat: contents = title + text).",
                                formatter_class=HelpFormatter)
    g = p.add_argument_group("index")
    g.add_argument("--corpus", required=True, help="collection name or path (see dupmae_ir.data.resolve)")
    g.add_argument("--data-dir", default=None, help="folder of local BEIR collections")
    g.add_argument("--index", required=True, help="BM25 index folder (built when missing)")
    g.add_argument("--threads", type=positive_int, default=default_threads(), help="indexing and search threads")
    s = p.add_argument_group("search")
    s.add_argument("--topics", default=None, help="queries: file or collection name (default: --corpus)")
    s.add_argument("--split", default=None, help="query split (default: the collection's evaluation split)")
    s.add_argument("--output", default=None, help="TREC run to write (no search when omitted)")
    s.add_argument("--hits", type=positive_int, default=1000, help="hits per query")
    s.add_argument("--k1", type=nonnegative_float, default=0.9, help="BM25 k1 (Pyserini BEIR regressions: 0.9)")
    s.add_argument("--b", type=unit_float, default=0.4, help="BM25 b (Pyserini BEIR regressions: 0.4)")
    s.add_argument("--drop-query-id", action="store_true", help="BEIR convention for ArguAna and Quora")
    s.add_argument("--overwrite", action="store_true", help="replace the run file of an earlier search")
    add_debug_flag(p)
    args = p.parse_args(argv)
    from ..data import resolve

    collection = resolve(args.corpus, data_dir=args.data_dir)
    # the run file and its sidecar are checked and locked before the index is built
    with claim_run_file(args.output, args.overwrite) if args.output else nullcontext() as claim:
        index = build_bm25_index(collection, args.index, threads=args.threads)
        if args.output:
            topics = resolve(args.topics, data_dir=args.data_dir) if args.topics else collection
            queries = topics.queries(args.split)
            run = bm25_search(index, queries, args.hits, args.k1, args.b, args.threads, args.drop_query_id)
            write_trec(args.output, run, "bm25", dict(index=str(index), topics=topics.name, split=args.split,
                                                       k1=args.k1, b=args.b, hits=args.hits), claim=claim)
            print(f"bm25: {len(run)} queries -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
