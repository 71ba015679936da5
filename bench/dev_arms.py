"""One report over several arms' saved dev runs: each arm's scores and paired tests against a reference arm.

    python bench/dev_arms.py --qrels DEV_QRELS --arm none=RUNS --arm pretrained=RUNS [--reference none]
        [--pair pretrained=none ...] [--about TEXT] --report eval/stage1-dev.md

Each ``RUNS`` folder holds the TREC runs one ``bench/bow_grounding.py --runs RUNS`` wrote (file name = system)
and the grounding report beside it (``--grounding NAME=FILE``, optional: its grounded shares are quoted).
Every system an arm shares with the reference arm is tested against it, paired over the judged queries
(nDCG@10; t-test and randomisation test of :mod:`dupmae_ir.eval.significance`), and each arm's own-terms
runs against its all-terms runs. Nothing is re-encoded: the numbers are the saved runs'.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from _harness import add_report_args, header, write_report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qrels", required=True, help="qrels of the dev queries (BEIR TSV or TREC)")
    p.add_argument("--arm", action="append", required=True, metavar="NAME=RUNS", help="an arm's folder of runs")
    p.add_argument("--grounding", action="append", default=[], metavar="NAME=FILE",
                   help="the arm's bow_grounding report (its grounded shares are quoted)")
    p.add_argument("--reference", default=None, help="the arm the others are tested against (default: the first)")
    p.add_argument("--pair", action="append", default=[], metavar="B=A",
                   help="test arm B against arm A (repeatable; instead of every arm against --reference)")
    p.add_argument("--about", default="", help="how the arms were made, for the report")
    p.add_argument("--title", default="Arms on a dev split", help="the report's title")
    p.add_argument("--versus-bm25", action="store_true",
                   help="also test each arm's hybrid and impact runs against the reference arm's BM25 run")
    add_report_args(p)
    args = p.parse_args()

    from dupmae_ir.data.readers import load_qrels_file
    from dupmae_ir.eval.significance import compare_runs, format_p
    from dupmae_ir.runs import read_trec, score_run

    qrels = load_qrels_file(args.qrels)
    arms = {}
    for spec in args.arm:
        name, folder = spec.split("=", 1)
        arms[name] = {f.name[:-len(".trec")]: read_trec(f) for f in sorted(Path(folder).glob("*.trec"))}
    reference = args.reference or next(iter(arms))
    shares = {}
    for spec in args.grounding:
        name, path = spec.split("=", 1)
        shares[name] = dict(re.findall(r"Grounded share, query terms (\w+): \*\*([0-9.]+%)\*\*",
                                       Path(path).read_text(encoding="utf-8")))

    systems = sorted({s for runs in arms.values() for s in runs}, key=lambda s: (s.startswith("bm25"), s))
    lines = ["| arm | system | nDCG@10 | R@100 |", "|---|---|---|---|"]
    for name, runs in arms.items():
        for system in systems:
            if system in runs and not (system.startswith("bm25") and name != reference):
                v = score_run(runs[system], qrels, ("nDCG@10", "R@100")).values
                lines.append(f"| {name} | {system} | {v['nDCG@10']:.4f} | {v['R@100']:.4f} |")
    if shares:
        lines += ["", "| arm | grounded share, query terms all | query terms own |", "|---|---|---|"]
        lines += [f"| {name} | {s.get('all', '')} | {s.get('own', '')} |" for name, s in shares.items()]
    lines += ["", "| B | A | system | B - A nDCG@10 (95% CI) | t-test p | randomisation p | queries |",
              "|---|---|---|---|---|---|---|"]

    def row(b: str, a: str, system_b: str, system_a: str) -> str:
        t = compare_runs(arms[a][system_a], arms[b][system_b], qrels, "nDCG@10")
        what = system_b if system_a == system_b else f"{system_b} vs {system_a}"
        return (f"| {b} | {a} | {what} | {t.delta:+.4f} ({t.ci_low:+.4f}, {t.ci_high:+.4f}) | {format_p(t.p_t)} | "
                f"{format_p(t.p_rand)} | {t.n} |")

    pairs = [tuple(spec.split("=", 1)) for spec in args.pair] or [(n, reference) for n in arms if n != reference]
    for b, a in pairs:
        lines += [row(b, a, s, s) for s in systems if s in arms[b] and s in arms[a] and not s.startswith("bm25")]
    bm25 = next((s for s in arms[reference] if s.startswith("bm25")), None)
    if args.versus_bm25 and bm25:
        arms["BM25"] = {bm25: arms[reference][bm25]}
        lines += [row(name, "BM25", s, bm25) for name, runs in arms.items() if name != "BM25"
                  for s in systems if s.startswith(("hybrid", "impact")) and s in runs]
        del arms["BM25"]
    for name, runs in arms.items():
        lines += [row(name, name, s, s.replace("-own", "-all")) for s in systems
                  if s.endswith("-own") and s in runs and s.replace("-own", "-all") in runs]
    text = "\n".join(lines)
    print(text)
    if args.report:
        write_report(args.report, header(args.title, args.about) + "\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
