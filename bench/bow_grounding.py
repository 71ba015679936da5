"""How lexical a DupMAE model's bag-of-words is, beside BM25 on the same queries.

    python bench/bow_grounding.py --model CKPT [--corpus default] [--split test] [--report eval/bow-grounding.md]
    # on the dev split a fine-tuning with --holdout-fraction 0.2 left out, both query-term settings
    python bench/bow_grounding.py --model CKPT --split train --holdout-fraction 0.2 --query-terms all own

For one checkpoint on one collection: the impact run alone (the bag-of-words, exhaustive float scoring
in memory, :class:`dupmae_ir.search.exact.ExactSearcher`), the dense and hybrid runs, and BM25 (Pyserini,
flat index), each scored with nDCG@10 and R@100, the impact and hybrid runs tested against BM25 (paired
t and randomisation tests over the queries); and the grounded share: per query, how many of its ten
heaviest impact terms are word pieces of its own text (the model's tokenizer,
:meth:`dupmae_ir.inference.DupMAEEncoder.grounded_shares`), averaged, with examples. With several
``--query-terms`` (``all``: the model's expansion; ``own``: the query's own pieces only) each setting gets
its impact and hybrid runs and shares over the same document encoding, each tested against the first.
Writes a Markdown report (command, date, machine, commit).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def top_terms(encoder, texts: list[str], k: int) -> list[list[tuple[str, float, bool]]]:
    """Per text, its ``k`` heaviest impact terms ``(piece, weight, is a piece of the text)``."""
    weights = encoder.encode_queries(texts, keep_weights=True).weights  # (N, V)
    out = []
    for text, row in zip(texts, weights):
        own = set(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
        top = row.topk(k)
        out.append([(encoder.tokenizer.convert_ids_to_tokens(int(i)), float(v), int(i) in own)
                    for v, i in zip(top.values, top.indices) if v > 0])
    return out


def main() -> int:
    from dupmae_ir.modeling import QUERY_TERMS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="DupMAE checkpoint (a fine-tuned one; 'default' = the backbone)")
    p.add_argument("--corpus", default="default", help="collection (default: the bundled SciFact)")
    p.add_argument("--split", default="test")
    p.add_argument("--holdout-fraction", type=float, default=0.0,
                   help="score only the dev part of --split that fine-tuning with this holdout left out")
    p.add_argument("--holdout-seed", type=int, default=13)
    p.add_argument("--query-terms", nargs="+", choices=QUERY_TERMS, default=None,
                   help="query-term settings to compare (default: the checkpoint's)")
    p.add_argument("--doc-max-length", type=int, default=128)
    p.add_argument("--terms", type=int, default=10, help="heaviest impact terms per query (default 10)")
    p.add_argument("--examples", type=int, default=5, help="queries shown with their terms (the first N)")
    p.add_argument("--work", default="encoders/bow-grounding", help="where the BM25 index is built (reused)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report", default="eval/bow-grounding.md")
    p.add_argument("--runs", default=None,
                   help="also write each run here as TREC (for `python -m dupmae_ir.eval compare` across models)")
    args = p.parse_args()

    import torch

    from dupmae_ir.bm25 import bm25_search, build_bm25_index
    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.eval.significance import compare_runs
    from dupmae_ir.modeling.model import DupMAEModel
    from dupmae_ir.precision import resolve_dtype
    from dupmae_ir.provenance import command_line, portable_path, report_header
    from dupmae_ir.runs import score_run
    from dupmae_ir.search.exact import ExactSearcher

    torch.set_num_threads(args.threads)
    coll = resolve(args.corpus)
    if args.holdout_fraction:
        from dupmae_ir.data.splits import dev_split

        queries, qrels = dev_split(coll, args.split, args.holdout_fraction, args.holdout_seed)
    else:
        queries, qrels = coll.queries(args.split), coll.qrels(args.split)
    queries = {q: t for q, t in queries.items() if q in qrels}  # the judged queries
    docs = {d.id: doc_text(d) for d in coll.iter_docs()}
    start = time.time()
    bm25 = bm25_search(build_bm25_index(coll, Path(args.work) / "bm25-index", threads=args.threads), queries,
                       hits=1000, threads=args.threads)
    model, tok = DupMAEModel.from_pretrained(args.model)
    dtype = resolve_dtype("auto", "cpu")
    retriever = ExactSearcher(model, tok, doc_max_length=args.doc_max_length, dtype=dtype)
    retriever.index(list(docs), list(docs.values()))
    settings = args.query_terms or [model.config.query_terms]
    first = settings[0]
    runs, shares, examples = {"BM25 (Pyserini, flat)": bm25}, {}, {}
    labels = {}  # (mode, query terms) -> the run's name
    texts = list(queries.values())
    for terms in settings:
        retriever.query_terms = terms
        found = retriever.search(queries, k=1000)
        for mode in found:
            if mode != "dense" or terms == first:  # dense does not depend on the query terms
                labels[mode, terms] = name = f"{mode} (in memory, query terms {terms})"
                runs[name] = found[mode]
        encoder = retriever.encoder.with_config(query_terms=terms)
        shares[terms] = [s for s in encoder.grounded_shares(texts, k=args.terms) if s is not None]
        examples[terms] = top_terms(encoder, texts[:args.examples], args.terms)
    seconds = time.time() - start
    if args.runs:
        from dupmae_ir.runs import write_trec

        for name, run in runs.items():
            slug = "-".join("".join(c if c.isalnum() else " " for c in name).lower().split())
            write_trec(Path(args.runs) / f"{slug}.trec", run, tag=slug[:40], overwrite=True,
                       provenance_info={"model": args.model, "system": name, "split": args.split,
                                        "holdout_fraction": args.holdout_fraction})

    of = {name: key for key, name in labels.items()}
    body = ["| system | nDCG@10 | R@100 | against BM25: B - A (95% CI), t-test p / randomisation p | "
            f"against query terms {first} (same mode) |", "|---|---|---|---|---|"]
    for name, run in runs.items():
        s = score_run(run, qrels, ("nDCG@10", "R@100")).values
        vs = "" if name.startswith("BM25") else compare_runs(bm25, run, qrels).summary()
        mode, terms = of.get(name, (None, first))
        vs_first = compare_runs(runs[labels[mode, first]], run, qrels).summary() if terms != first else ""
        body.append(f"| {name} | {s['nDCG@10']:.4f} | {s['R@100']:.4f} | {vs} | {vs_first} |")
    split = f"{args.split} ({args.holdout_fraction:.0%} dev part)" if args.holdout_fraction else args.split
    for terms in settings:
        counted = shares[terms]
        mean = statistics.mean(counted) if counted else float("nan")
        body += ["", f"Grounded share, query terms {terms}: **{mean:.1%}** of a query's {args.terms} heaviest impact "
                     f"terms are word pieces of its own text (mean over {len(counted)} of {len(texts)} {split} queries "
                     f"with a positive term; {sum(s >= 0.6 for s in counted)} queries at 60% or more). Query terms as "
                     f"the checkpoint prunes them (query top-k {retriever.encoder.config.query_topk}), before "
                     "quantisation.", "", "Examples (the first queries; pieces of the query's own text in bold):", ""]
        body += [f"- \"{text}\": " + ", ".join(f"**{t}**" if own else t for t, _, own in found)
                 for text, found in zip(texts, examples[terms])]
    body += ["", f"Model `{portable_path(args.model)}`; collection `{portable_path(args.corpus)}` ({split}, "
                 f"{len(queries)} judged queries, "
                 f"{len(docs)} documents at {args.doc_max_length} pieces); encoding {dtype}; "
                 f"{seconds:.0f} s."]
    text = report_header("The bag-of-words: grounded share and impact-only retrieval",
                         "How lexical a DupMAE model's bag-of-words is, and its impact run alone beside BM25 "
                         "(`bench/bow_grounding.py`).", [command_line()]) + "\n" + "\n".join(body) + "\n"
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
