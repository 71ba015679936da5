"""``python -m dupmae_ir.search``: dense, impact and hybrid search over a ``dupmae_ir.encode`` index,
writing TREC runs with provenance beside them."""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from ..cli import (
    CommandParser,
    HelpFormatter,
    add_debug_flag,
    add_fusion_args,
    add_length_args,
    add_search_args,
    fusion_from_args,
    nonnegative_float,
    positive_int,
    unit_float,
)
from ..errors import UserError, run_command
from ..modeling import QUERY_TERMS
from ..precision import TRAINING_DTYPES
from ..runs import HYBRID_BM25, SEARCH_MODES, claim_run_file, write_trec
from .searcher import DupMAESearcher


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m dupmae_ir.search",
        description="Dense, impact and hybrid (DupMAE) search over a `dupmae_ir.encode` index with FAISS and "
                    "Lucene impact search with top-k pruning (block-max WAND). Writes TREC runs with provenance "
                    "JSON beside them.",
        formatter_class=HelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--index", required=True, help="folder written by `python -m dupmae_ir.encode --output`")
    io.add_argument("--topics", required=True,
                    help="queries: a TSV (qid<TAB>text) or JSONL file, a BEIR folder, or a collection name "
                         "(`default`, `beir/scifact`, ...)")
    io.add_argument("--split", default=None, help="query split of a collection (default: its evaluation split)")
    io.add_argument("--data-dir", default=None, help="folder of local BEIR collections for --topics names")
    io.add_argument("--output", default=None,
                    help="run file; with several --mode, '{mode}' in it is replaced (default: "
                         "runs/<index>.<topics>.{mode}.trec)")
    io.add_argument("--overwrite", action="store_true", help="replace run files of an earlier search")
    io.add_argument("--drop-query-id", action="store_true",
                    help="remove hits whose docid equals the query id (BEIR convention for ArguAna and Quora)")
    add_search_args(p, modes=SEARCH_MODES)
    q = p.add_argument_group("query encoder")
    q.add_argument("--encoder", default=None,
                   help="query encoder checkpoint (default: the encoder recorded in the index's dupmae_index.json)")
    q.add_argument("--device", default="cpu", help="query encoder device")
    q.add_argument("--dtype", default="fp32", choices=TRAINING_DTYPES,
                   help="query encoding precision (fp32: the same queries as stock Pyserini's encoders; bf16 cuts "
                        "query encoding by about a quarter on CPUs with AVX512-BF16, and is slow without)")
    q.add_argument("--encoded-queries", default=None,
                   help="folder from `dupmae_ir.encode --topics` (read from dense/embedding.npy, dense/queries.jsonl "
                        "and impact.jsonl; the pickle beside them is never loaded): these query representations "
                        "replace live encoding (as Pyserini's --encoded-queries)")
    q.add_argument("--allow-other-encoder", action="store_true",
                   help="search with --encoded-queries made by another checkpoint than the index's (refused "
                        "by default: their scores against these documents mean nothing)")
    q.add_argument("--query-topk", type=positive_int, default=None,
                   help="keep each query's N largest impact weights (default: the index's query_topk)")
    q.add_argument("--query-min-weight", type=nonnegative_float, default=None,
                   help="drop query impact weights below this, before quantisation (default: the index's)")
    q.add_argument("--query-terms", choices=QUERY_TERMS, default=None,
                   help="own: a query weights only its own word pieces, no expansion (default: the index's)")
    add_length_args(p, doc=False)
    add_fusion_args(p)
    b = p.add_argument_group("BM25 (mode hybrid+bm25)")
    b.add_argument("--bm25-index", default=None,
                   help="Lucene BM25 index of the same collection (`python -m dupmae_ir.bm25 --index`, or Pyserini's)")
    b.add_argument("--bm25-k1", type=nonnegative_float, default=0.9, help="BM25 k1 (Pyserini BEIR regressions: 0.9)")
    b.add_argument("--bm25-b", type=unit_float, default=0.4, help="BM25 b (Pyserini BEIR regressions: 0.4)")
    add_debug_flag(p)
    return p


def _output_path(args, mode: str) -> Path:
    """``--output`` with ``{mode}`` filled in (or ``.<mode>`` added when several modes share it);
    default ``runs/<index>.<topics>.<mode>.trec``."""
    if not args.output:
        name = Path(args.topics).name.replace(".jsonl", "").replace(".tsv", "") or "topics"
        return Path("runs") / f"{Path(args.index).name}.{name}.{mode}.trec"
    if "{mode}" in args.output:
        return Path(args.output.replace("{mode}", mode))
    out = Path(args.output)
    return out if len(args.mode) == 1 else out.with_name(f"{out.stem}.{mode}{out.suffix}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..data import resolve

    if not args.mode:
        raise UserError("--mode", "no mode given", f"pass one or more of {', '.join(SEARCH_MODES)}")
    if (HYBRID_BM25 in args.mode) != (args.bm25_index is not None):
        raise UserError("--bm25-index", "is needed by --mode hybrid+bm25 and only by it",
                        "pass both or neither (a BM25 index: `python -m dupmae_ir.bm25 --corpus C --index DIR`)")
    given = [flag for flag, value in (("--query-topk", args.query_topk), ("--query-min-weight", args.query_min_weight),
                                      ("--query-max-length", args.query_max_length),
                                      ("--query-terms", args.query_terms)) if value is not None]
    if args.encoded_queries and given:  # pre-encoded queries carry the settings they were encoded with
        raise UserError(given[0], "has no effect with --encoded-queries",
                        f"drop it, or encode the topics again with it (`dupmae_ir.encode --topics ... {given[0]} ...`)")
    if args.allow_other_encoder and not args.encoded_queries:
        raise UserError("--allow-other-encoder", "has no effect without --encoded-queries", "drop it")
    collection = resolve(args.topics, data_dir=args.data_dir)
    queries = collection.queries(args.split)
    outputs = {mode: _output_path(args, mode) for mode in args.mode}
    with ExitStack() as stack:  # run files and sidecars checked and locked before any model or index is loaded
        claims = {mode: stack.enter_context(claim_run_file(out, args.overwrite)) for mode, out in outputs.items()}
        return _search(args, queries, claims)


def _search(args, queries: dict, claims: dict) -> int:
    """Load the searcher, search every mode and write the claimed run files."""
    t0 = time.perf_counter()
    searcher = DupMAESearcher(args.index, encoder=args.encoder, threads=args.threads, device=args.device,
                              dtype=args.dtype,
                              min_idf=args.min_idf, encoded_queries=args.encoded_queries,
                              query_max_length=args.query_max_length, query_topk=args.query_topk,
                              query_min_weight=args.query_min_weight, bm25_index=args.bm25_index,
                              bm25_k1=args.bm25_k1, bm25_b=args.bm25_b, ef_search=args.ef_search,
                              nprobe=args.nprobe, allow_other_encoder=args.allow_other_encoder,
                              query_terms=args.query_terms)
    fusion = fusion_from_args(args)
    t1 = time.perf_counter()
    args.hits = min(args.hits, searcher.size)  # the run and its provenance hold what an index can give
    runs = searcher.search_all(queries, args.mode, args.hits, args.depth, fusion, args.batch_size,
                               drop_query_id=args.drop_query_id)
    t2 = time.perf_counter()
    for mode, run in runs.items():
        out = claims[mode].path
        alpha = fusion.alpha_for(searcher.alpha)
        write_trec(out, run, tag=f"dupmae-{mode}", claim=claims[mode], provenance_info=dict(
            mode=mode, index=str(Path(args.index).resolve()), encoder=searcher.query_encoder,
            topics=str(args.topics), split=args.split, hits=args.hits, depth=args.depth or args.hits,
            fusion=dict(fusion=fusion.fusion, alpha=alpha, weight_on_dense=fusion.weight_on_dense,
                        rrf_k=fusion.rrf_k) if mode in ("hybrid", HYBRID_BM25) else None,
            bm25=dict(index=str(Path(args.bm25_index).resolve()), k1=args.bm25_k1, b=args.bm25_b,
                      fusion="min-max per query, summed (pyserini.fusion --method normalize)")
            if mode == HYBRID_BM25 else None,
            min_idf=args.min_idf, drop_query_id=args.drop_query_id, encoded_queries=args.encoded_queries,
            dense_search=searcher.dense_search if mode != "impact" else None,
            query_config=None if args.encoded_queries else {  # pre-encoded: see their own provenance
                k: getattr(searcher.encoder.config, k)
                for k in ("query_max_length", "query_topk", "query_min_weight", "query_scale", "query_terms")}
            | {"dtype": args.dtype},
            index_meta=searcher.info.meta))
        print(f"{mode}: {len(run)} queries -> {out}", file=sys.stderr)
    print(f"searched {len(queries)} queries in {t2 - t1:.1f} s ({len(queries) / max(t2 - t1, 1e-9):.1f} q/s; "
          f"set-up {t1 - t0:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
