"""Benchmark: SciFact-trained models applied unchanged to another collection (transfer), with the levers.

    python bench/transfer.py --model recipe=PATH [--model NAME=PATH ...] [--index NAME=DIR ...]
        [--collection ../shared/data/nfcorpus-orig-preprocessed] [--report eval/transfer-nfcorpus.md]

Rows: BM25 (Pyserini, flat); the backbone zero-shot with mean and [CLS] pooling; BM25 fused with the
mean-pooled backbone; for each model its dense, impact and hybrid (DupMAE's sum) runs, its dense run
with mean pooling, and the fusions with BM25, each as stock ``python -m pyserini.fusion --method
normalize`` fuses run files (:func:`dupmae_ir.runs.fuse_normalize`: min-max per query, a one-hit list
counts 1, summed): ``hybrid+bm25`` (what ``dupmae_ir.search --mode hybrid+bm25`` writes),
``dense+impact+bm25``, ``hybrid+bm25+backbone(mean)``. Exhaustive in-memory scoring (floats) at
the given lengths; ``--index`` takes a toolkit index instead (the route's, ``dupmae_ir.adapt``), searched by
``dupmae_ir.search``'s searcher. Each model's hybrid and fusions are tested against BM25 and BM25 +
backbone, paired over the queries. Every run is cached under ``--work`` as JSON, so adding a model re-encodes nothing
else. The collection has test queries
only: it is a transfer *dev* collection, each number is read once and reported as it is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _harness import ROOT, add_report_args, header, portable, write_report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="a SciFact-trained model")
    p.add_argument("--index", action="append", default=[], metavar="NAME=DIR",
                   help="a toolkit index of the collection (e.g. the one `dupmae_ir.adapt` leaves): its dense, impact "
                        "and hybrid runs come from `dupmae_ir.search`'s searcher (the product path), no re-encoding")
    p.add_argument("--own", action="append", default=[], metavar="NAME",
                   help="search this --model/--index row with query_terms own (queries weight only their own "
                        "word pieces; name the row apart, e.g. --index route-own=DIR --own route-own)")
    p.add_argument("--about", default="", help="what the models and indexes are (how each was made), for the report")
    p.add_argument("--no-cls-backbone", action="store_true", help="skip the backbone's [CLS] row (one encode less)")
    p.add_argument("--backbone", default="default")
    p.add_argument("--collection", default=str(ROOT.parent / "shared/data/nfcorpus-orig-preprocessed"))
    p.add_argument("--split", default="test")
    p.add_argument("--doc-max-length", type=int, default=512)
    p.add_argument("--query-max-length", type=int, default=64)
    p.add_argument("--work", default="/tmp/dupmae-transfer")
    add_report_args(p)
    args = p.parse_args()

    from dupmae_ir.bm25 import bm25_search, build_bm25_index
    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.modeling.model import DupMAEModel
    from dupmae_ir.precision import default_device, resolve_dtype
    from dupmae_ir.runs import fuse_normalize, score_run
    from dupmae_ir.search.exact import ExactSearcher

    coll = resolve(args.collection)
    queries, qrels = coll.queries(args.split), coll.qrels(args.split)
    docs = {d.id: doc_text(d) for d in coll.iter_docs()}
    work = Path(args.work) / f"{Path(args.collection).name}-d{args.doc_max_length}-q{args.query_max_length}"
    work.mkdir(parents=True, exist_ok=True)
    dtype = resolve_dtype("auto", str(default_device()))

    def cached(name: str, make) -> dict:
        path = work / f"{name}.json"
        if not path.is_file():
            path.write_text(json.dumps(make()))
        return {q: [tuple(h) for h in hits] for q, hits in json.loads(path.read_text()).items()}

    def exact(path: str, pooling: str, modes: tuple[str, ...], query_terms: str | None = None):
        def make():
            model, tok = DupMAEModel.from_pretrained(path)
            r = ExactSearcher(model, tok, args.doc_max_length, args.query_max_length, need_sparse=pooling == "cls",
                              pooling=pooling, dtype=dtype, query_terms=query_terms)
            r.index(list(docs), list(docs.values()))
            return r.search(queries, k=1000, modes=modes)
        return make

    rows: list[tuple[str, dict]] = []
    bm25 = cached("bm25", lambda: bm25_search(build_bm25_index(coll, work / "bm25-index"), queries, hits=1000))
    rows.append(("BM25 (Pyserini, flat)", bm25))
    zs = cached("backbone-mean", lambda: exact(args.backbone, "mean", ("dense",))()["dense"])
    rows.append(("backbone zero-shot, mean pooling", zs))
    if not args.no_cls_backbone:
        rows.append(("backbone zero-shot, [CLS]",
                     cached("backbone-cls", lambda: exact(args.backbone, "cls", ("dense",))()["dense"])))

    def fused(*runs) -> dict:  # stock `pyserini.fusion --method normalize` of the runs
        return {q: fuse_normalize([r.get(q, []) for r in runs], 1000) for q in queries}

    rows.append(("BM25 + backbone (mean), normalised fusion", fused(bm25, zs)))
    for spec in args.model:
        name, path = spec.split("=", 1)
        runs = {}
        for mode in ("dense", "impact", "hybrid"):
            if not (work / f"{name}-{mode}.json").is_file():
                terms = "own" if name in args.own else None
                for m, run in exact(path, "cls", ("dense", "impact", "hybrid"), terms)().items():
                    (work / f"{name}-{m}.json").write_text(json.dumps(run))
            runs[mode] = cached(f"{name}-{mode}", None)
        runs["mean"] = cached(f"{name}-mean", lambda p=path: exact(p, "mean", ("dense",))()["dense"])
        rows += [(f"{name}: dense ([CLS])", runs["dense"]), (f"{name}: impact", runs["impact"]),
                 (f"{name}: hybrid (sum)", runs["hybrid"]), (f"{name}: dense, mean pooling", runs["mean"]),
                 (f"{name}: hybrid+bm25", fused(runs["hybrid"], bm25)),
                 (f"{name}: dense+impact+bm25", fused(runs["dense"], runs["impact"], bm25)),
                 (f"{name}: hybrid+bm25+backbone(mean)", fused(runs["hybrid"], bm25, zs))]

    for spec in args.index:
        name, path = spec.split("=", 1)

        if not all((work / f"{name}-index-{m}.json").is_file() for m in ("dense", "impact", "hybrid")):
            from dupmae_ir.search import DupMAESearcher
            found = DupMAESearcher(path, threads=2, query_terms="own" if name in args.own else None).search_all(
                queries, ("dense", "impact", "hybrid"), hits=1000)
            for m, run in found.items():
                (work / f"{name}-index-{m}.json").write_text(json.dumps(run))
        runs = {m: cached(f"{name}-index-{m}", None) for m in ("dense", "impact", "hybrid")}
        rows += [(f"{name}: dense ([CLS])", runs["dense"]), (f"{name}: impact", runs["impact"]),
                 (f"{name}: hybrid (sum)", runs["hybrid"]), (f"{name}: hybrid+bm25", fused(runs["hybrid"], bm25)),
                 (f"{name}: hybrid+bm25+backbone(mean)", fused(runs["hybrid"], bm25, zs))]

    lines = ["| system | nDCG@10 | R@100 |", "|---|---|---|"]
    for system, run in rows:
        v = score_run(run, qrels, ("nDCG@10", "R@100")).values
        lines.append(f"| {system} | {v['nDCG@10']:.4f} | {v['R@100']:.4f} |")
    lines += ["", *paired_table(dict(rows), qrels, [spec.split("=", 1)[0] for spec in args.model + args.index])]
    text = "\n".join(lines)
    print(text)
    if args.report:
        what = (f"Models on `{portable(args.collection)}` ({args.split} split, {len(queries)} queries, "
                f"{len(docs):,} documents), documents {args.doc_max_length} pieces, queries {args.query_max_length}; "
                f"`--model` rows: exhaustive in-memory scoring, {str(dtype).replace('torch.', '')} encoders; "
                "`--index` rows: the toolkit index searched by `dupmae_ir.search`'s searcher (`bench/transfer.py`). "
                "The collection has no training split: each number is read once and reported as it is. "
                + args.about)
        write_report(args.report, header("Transfer: SciFact-trained models on another collection", what) + "\n" + text)
    return 0


def paired_table(runs: dict, qrels: dict, models: list[str]) -> list[str]:
    """Each model's runs against BM25 and against BM25 + backbone, paired over the judged queries
    (nDCG@10; t-test and randomisation test of :mod:`dupmae_ir.eval.significance`)."""
    from dupmae_ir.eval.significance import compare_runs, format_p

    bm25, fusion = "BM25 (Pyserini, flat)", "BM25 + backbone (mean), normalised fusion"
    lines = ["| B | A | B - A nDCG@10 (95% CI) | t-test p | randomisation p | queries |", "|---|---|---|---|---|---|"]
    for name in models:
        for b, a in ((f"{name}: hybrid (sum)", bm25), (f"{name}: hybrid+bm25", fusion),
                     (f"{name}: hybrid+bm25+backbone(mean)", fusion)):
            t = compare_runs(runs[a], runs[b], qrels, "nDCG@10")
            lines.append(f"| {b} | {a} | {t.delta:+.4f} ({t.ci_low:+.4f}, {t.ci_high:+.4f}) | {format_p(t.p_t)} | "
                         f"{format_p(t.p_rand)} | {t.n} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
