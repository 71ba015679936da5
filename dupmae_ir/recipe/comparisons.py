"""The recipe's paired comparisons: which row of its table is tested against which, over the same queries.

Every comparison is B against A on the per-query nDCG@10 of one split, through
:func:`dupmae_ir.eval.significance.compare_per_query` (paired t-test, randomisation test, mean
difference with its 95% interval):

- what pre-training adds: each "no pre-training + stage S: MODE" row (A) against its equal
  "DupMAE pre-trained + stage S: MODE" (B), same stages, settings and seed;
- what stage 2 adds: each arm's hybrid at stages 1+2 (B) against its hybrid at stage 1 (A);
- the final model against the baselines: its hybrid and its impact run alone (B) against BM25 (A),
  its hybrid against BM25 + the zero-shot backbone's normalised fusion (A).
"""
from __future__ import annotations

from ..eval.significance import compare_per_query, format_p
from .rows import ARMS, MODELS, MODES, Row, final_hybrid, find

MEASURE = "nDCG@10"


def pairs(rows: list[Row]) -> list[tuple[str, Row, Row]]:
    """``(what, A, B)`` for the rows (one split's table, in its order) that have their reference."""
    out = []
    for r in rows:  # pre-training, at every stage and mode both arms ran
        equal = find(rows, model="pt", stages=r.stages, mode=r.mode) if r.model == "nopt" else None
        if equal is not None:
            out.append((f"pre-training, stage {'+'.join(map(str, r.stages))}: {MODES[r.mode]}", r, equal))
    for arm in ARMS:  # stage 2
        one, both = (find(rows, model=arm, stages=s, mode="hybrid") for s in ((1,), (1, 2)))
        if one is not None and both is not None:
            out.append((f"stage 2 ({MODELS[arm]})", one, both))
    final = final_hybrid(rows)
    if final is not None:
        bm25, fusion = find(rows, model="bm25"), find(rows, model="fusion")
        impact = find(rows, model="pt", stages=final.stages, mode="impact")
        for what, a, b in (("final hybrid vs BM25", bm25, final), ("final impact alone vs BM25", bm25, impact),
                           ("final hybrid vs the fusion baseline", fusion, final)):
            if a is not None and b is not None:
                out.append((what, a, b))
    return out


def compare_rows(rows: list[Row], split: str) -> list[dict]:
    """The comparisons of ``rows`` (one split's table) from their per-query values; each not-pre-trained
    row also gets its test against the pre-trained equal (``row.paired``, and a line in its note)."""
    out = []
    for what, a, b in pairs(rows):
        test = compare_per_query(a.per_query, b.per_query)
        out.append({"split": split, "what": what, "a": a.label, "b": b.label, "measure": MEASURE, **test.as_dict()})
        if a.model == "nopt" and b.model == "pt":
            a.paired = {"against": b.label, **test.as_dict()}
            a.add_note(f"pre-trained {test.delta:+.4f} [{test.ci_low:+.4f}, {test.ci_high:+.4f}], "
                       f"p {format_p(test.p_t)} (t) / {format_p(test.p_rand)} (rand.)")
    return out


def table(comparisons: list[dict]) -> list[str]:
    """Markdown lines: one row per comparison."""
    lines = ["| split | comparison | A | B | A nDCG@10 | B nDCG@10 | B - A (95% CI) | t-test p | randomisation p | "
             "queries |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['split']} | {c['what']} | {c['a']} | {c['b']} | {c['mean_a']:.4f} | {c['mean_b']:.4f} | "
              f"{c['delta']:+.4f} ({c['ci_low']:+.4f}, {c['ci_high']:+.4f}) | {format_p(c['p_t'])} | "
              f"{format_p(c['p_rand'])} | {c['n']} |" for c in comparisons]
    return lines
