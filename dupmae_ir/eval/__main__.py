"""``python -m dupmae_ir.eval beir|msmarco``: encode, search and score every collection of a suite;
``python -m dupmae_ir.eval compare RUN_A RUN_B --qrels QRELS``: paired significance of two runs."""
from __future__ import annotations

import argparse
import sys
import time

from ..cli import (
    CommandParser,
    HelpFormatter,
    add_debug_flag,
    add_dense_index_args,
    add_fusion_args,
    add_length_args,
    add_search_args,
    dense_index_spec,
    fusion_from_args,
)
from ..errors import UserError, run_command
from ..runs import MODES, SEARCH_MODES
from . import __doc__ as package_doc
from .baselines import BACKBONE, BM25_BACKBONE
from .report import beir_rows, paired_lines, write_plots, write_report
from .significance import format_p
from .suites import (
    BEIR_MEASURES,
    MSMARCO_MEASURES,
    PAPER_BEIR,
    PAPER_MSMARCO,
    PYSERINI_BM25_MSMARCO,
    EvalSettings,
    Evaluator,
    beir_units,
    msmarco_units,
)


def build_parser() -> argparse.ArgumentParser:
    from ..data.resolve import BEIR_DATASETS

    p = CommandParser(prog="python -m dupmae_ir.eval", description=package_doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="suite", required=True, metavar="{beir,msmarco,compare}")
    for suite in ("beir", "msmarco"):
        sp = sub.add_parser(suite, help=f"evaluate on {'BEIR' if suite == 'beir' else 'MS MARCO passage'}",
                            formatter_class=HelpFormatter)
        d = sp.add_argument_group("data")
        if suite == "beir":
            d.add_argument("--datasets", nargs="+", default=list(BEIR_DATASETS), metavar="NAME",
                           help="BEIR collections (cqadupstack = its 12 forums; cqadupstack/<forum> also works); "
                                "with --data-dir, any folder name under it in BEIR layout")
        d.add_argument("--data-dir", default=None,
                       help="local folders only: <data-dir>/<collection> in BEIR layout"
                            + (" (e.g. ../shared/data/beir)" if suite == "beir" else " (<data-dir>/msmarco-passage)")
                            + "; without it, ir_datasets ids")
        d.add_argument("--measures", nargs="+", default=None,
                       help="ir-measures strings (default: " + (", ".join(BEIR_MEASURES) if suite == "beir"
                                                                else "dev RR@10 R@1000; DL19/DL20 nDCG@10") + ")")
        m = sp.add_argument_group("model and artifacts")
        m.add_argument("--encoder", default="default", help="DupMAE checkpoint used to encode the corpora")
        m.add_argument("--index-root", default="indexes", help="indexes go to <index-root>/<encoder>/<collection>")
        m.add_argument("--runs", default="runs", help="runs go to <runs>/<suite>/<encoder|bm25>/")
        m.add_argument("--output", default="eval", help="reports go to <output>/<suite>/<encoder>/")
        m.add_argument("--no-bm25", action="store_true", help="skip the BM25 baseline")
        if suite == "beir":
            m.add_argument("--baseline-backbone", default=None, metavar="CKPT",
                           help="also score CKPT zero-shot (mean pooling, exhaustive in memory; 'default': the "
                                "bundled backbone) and BM25 fused with it (normalised fusion), and test each model "
                                "row against that fusion as well as against BM25 (default: off)")
        m.add_argument("--force-search", action="store_true",
                       help="search and score again even when a collection's result file exists (indexes are reused)")
        add_search_args(sp, modes_default=MODES, modes=SEARCH_MODES).description = (
            "--mode with no value runs BM25 alone (nothing is encoded); hybrid+bm25 fuses the hybrid run with "
            "eval's own BM25 index of each collection (no --bm25-index), as `dupmae_ir.search` does")
        add_dense_index_args(sp.add_argument_group(
            "dense index (built when a collection has no index yet; a non-flat type gets its own folders)"))
        add_fusion_args(sp)
        add_length_args(sp, note="default: documents 512 on BEIR, queries 512 on ArguAna, else the checkpoint's")
        add_debug_flag(sp)
    add_compare_parser(sub)
    return p


def add_compare_parser(sub) -> None:
    from .significance import N_RESAMPLES, SEED

    sp = sub.add_parser("compare", help="paired significance of run B against run A over the judged queries",
                        formatter_class=HelpFormatter,
                        description="Score two TREC runs per query with ir-measures and test B against A: mean "
                                    "per-query difference (B - A) with its 95% confidence interval, paired t-test, "
                                    "paired randomisation test (scipy). Queries: the judged queries at least one run "
                                    "holds; a query missing from one run scores 0 there.")
    sp.add_argument("run_a", metavar="RUN_A", help="TREC run of the reference system (qid Q0 docid rank score tag)")
    sp.add_argument("run_b", metavar="RUN_B", help="TREC run file of the system compared with it")
    sp.add_argument("--qrels", required=True, help="qrels: BEIR TSV (qid docid rel) or TREC (qid 0 docid rel)")
    sp.add_argument("--metric", nargs="+", default=["nDCG@10"], metavar="MEASURE",
                    help="ir-measures strings (default nDCG@10)")
    sp.add_argument("--resamples", type=int, default=N_RESAMPLES,
                    help="randomisation test: random sign flips (default %(default)s; exact when 2^n is fewer)")
    sp.add_argument("--seed", type=int, default=SEED, help="seed of the randomisation test (default %(default)s)")
    add_debug_flag(sp)


def check_measures(measures, flag: str = "--measures") -> None:
    import ir_measures

    for mstr in measures:
        try:
            ir_measures.parse_measure(mstr)
        except Exception as e:  # noqa: BLE001 - ir-measures raises several types
            raise UserError(flag, f"{mstr!r} is not an ir-measures string ({e})",
                            "use measures such as nDCG@10 R@1000 RR@10 'R(rel=2)@1000' P@5") from None


def compare(args) -> int:
    """Print B against A per measure (``compare`` subcommand)."""
    from pathlib import Path

    from ..data.readers import load_qrels_file
    from ..errors import DataError
    from ..runs import read_trec
    from .significance import compare_runs

    check_measures(args.metric, "--metric")
    if args.resamples < 1:
        raise UserError("--resamples", f"{args.resamples} must be at least 1", "pass e.g. --resamples 10000")
    qrels = load_qrels_file(args.qrels)
    runs = []
    for path in (args.run_a, args.run_b):
        if not Path(path).is_file():
            raise DataError(path, "run file not found", "check the path")
        run = read_trec(path)
        if not run:
            raise DataError(path, "the run holds no hits", "pass a TREC run file (qid Q0 docid rank score tag)")
        runs.append(run)
    a, b = runs
    queries = [q for q in qrels if q in a or q in b]
    if len(queries) < 2:
        raise DataError(args.qrels, f"{len(queries)} judged quer{'y is' if len(queries) == 1 else 'ies are'} in "
                                    "the runs; a paired test needs at least 2",
                        "pass the qrels of the topics the runs searched (same query ids)")
    print(f"A: {args.run_a}\nB: {args.run_b}\nqrels: {args.qrels}")
    print(f"queries: {len(queries)} judged in either run (missing from A: {sum(q not in a for q in queries)}, "
          f"from B: {sum(q not in b for q in queries)}, scored 0 there); "
          f"judged in neither: {len(qrels) - len(queries)}; run queries without judgements: "
          f"{len((a.keys() | b.keys()) - qrels.keys())}")
    print("| measure | A | B | B - A | 95% CI | t | t-test p | randomisation p |")
    print("|---|---|---|---|---|---|---|---|")
    for measure in args.metric:
        t = compare_runs(a, b, qrels, measure, n_resamples=args.resamples, seed=args.seed)
        rand = format_p(t.p_rand) + (" (exact)" if t.exact else "")
        print(f"| {measure} | {t.mean_a:.4f} | {t.mean_b:.4f} | {t.delta:+.4f} | [{t.ci_low:+.4f}, {t.ci_high:+.4f}] "
              f"| {t.t:.3f} | {format_p(t.p_t)} | {rand} |")
    flips = "all 2^n sign patterns" if t.exact else f"{args.resamples} random sign patterns (seed {args.seed})"
    print(f"Two-sided tests; the randomisation test flips the signs of the per-query differences: {flips}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.suite == "compare":
        return compare(args)
    measures = tuple(args.measures) if args.measures else None
    if measures:
        check_measures(measures)
    backbone = getattr(args, "baseline_backbone", None)
    if backbone and args.no_bm25:
        raise UserError("--no-bm25", "the BM25 + backbone baseline of --baseline-backbone needs the BM25 run",
                        "drop --no-bm25 or --baseline-backbone")
    from ..provenance import provenance

    t0 = time.perf_counter()
    settings = EvalSettings(encoder=args.encoder, output=args.output, index_root=args.index_root, runs=args.runs,
                            data_dir=args.data_dir, modes=tuple(args.mode), bm25=not args.no_bm25,
                            baseline_backbone=backbone,
                            force_search=args.force_search, hits=args.hits, batch_size=args.batch_size,
                            threads=args.threads, depth=args.depth, min_idf=args.min_idf,
                            ef_search=args.ef_search, nprobe=args.nprobe, dense_index=dense_index_spec(args),
                            doc_max_length=args.doc_max_length, query_max_length=args.query_max_length,
                            fusion=fusion_from_args(args))
    ev = Evaluator(args.suite, settings)
    from ..encode.distributed import is_worker

    units = beir_units(args.datasets, measures, args.data_dir) if args.suite == "beir" else msmarco_units(measures)
    results = ev.run(units)
    if is_worker():  # a torchrun worker did its share of every encode; rank 0 reports
        return 0
    if args.suite == "beir":
        all_measures = measures or BEIR_MEASURES
        rows = beir_rows(results, args.datasets, all_measures)
        paper = {"columns": ("BM25", "RetroMAE", "DupMAE"),
                 "values": lambda c, m: PAPER_BEIR.get(c, (None,) * 3) if m == "nDCG@10" else (None,) * 3}
    else:
        all_measures = measures or ("RR@10", "R@1000", "nDCG@10")
        rows = [dict(collection=r["unit"], status=r["status"], scores=r.get("scores"), reason=r.get("reason"),
                     coverage_warning=r.get("coverage_warning")) for r in results]
        paper = {"columns": ("BM25", "DupMAE"),
                 "values": lambda c, m: (PYSERINI_BM25_MSMARCO.get(c, {}).get(m), PAPER_MSMARCO.get(c, {}).get(m))}
    meta = provenance(artifact="eval_report", encoder=args.encoder, data_dir=args.data_dir, baseline_backbone=backbone,
                      seconds=round(time.perf_counter() - t0, 2))
    if args.suite == "msmarco":  # each split has its own measures: one table row per split and measure
        rows = [dict(r, collection=f"{r['collection']} {m}",
                     scores={s: {"score": v[m]} for s, v in r["scores"].items()} if r.get("scores") else None)
                for r in rows for m in (MSMARCO_MEASURES[r["collection"]] if not measures else measures)]
        paper_vals = paper["values"]
        paper["values"] = lambda c, m: paper_vals(c.split(" ")[0], c.split(" ")[1]) if " " in c else (None, None)
        all_measures = ("score",)
    requested = ([] if args.no_bm25 else ["bm25"]) + ([BACKBONE, BM25_BACKBONE] if backbone else []) + list(args.mode)
    paired = paired_lines(results) + paired_lines(results, "paired_backbone", "BM25 + backbone")
    write_report(ev.out, args.suite, rows, all_measures, paper, meta, requested, paired)
    plots = write_plots(ev.out, rows, all_measures[0], paper)
    print(f"report: {ev.out / 'report.md'}; plots: {len(plots)}; {meta['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
