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

MEASURE = "nDCG@10"
PT, NOPT = "DupMAE pre-trained", "no pre-training"
BM25 = "BM25 (Pyserini, flat)"
FUSION_BASELINE = "BM25 + backbone(mean), normalised fusion"
HYBRID = ": hybrid (sum)"


def pairs(systems: list[str]) -> list[tuple[str, str, str]]:
    """``(what, A, B)`` for the rows of ``systems`` (the table's order) that have their reference."""
    present = set(systems)
    out = []
    for s in systems:  # pre-training, at every stage and mode both arms ran
        if s.startswith(NOPT + " + ") and PT + s[len(NOPT):] in present:
            out.append(("pre-training" + s[len(NOPT):].replace(" + ", ", ", 1), s, PT + s[len(NOPT):]))
    for arm in (PT, NOPT):  # stage 2
        one, both = f"{arm} + stage 1{HYBRID}", f"{arm} + stage 1+2{HYBRID}"
        if one in present and both in present:
            out.append((f"stage 2 ({arm})", one, both))
    final = [s for s in systems if s.startswith(PT + " + ") and s.endswith(HYBRID)]
    if final:
        impact = final[-1][:-len(HYBRID)] + ": impact"
        for what, a, b in (("final hybrid vs BM25", BM25, final[-1]), ("final impact alone vs BM25", BM25, impact),
                           ("final hybrid vs the fusion baseline", FUSION_BASELINE, final[-1])):
            if a in present and b in present:
                out.append((what, a, b))
    return out


def compare_rows(rows: list[dict], per_query: dict[str, dict[str, float]], split: str) -> list[dict]:
    """The comparisons of ``rows`` (one split's table) from their per-query values; each not-pre-trained
    row also gets its test against the pre-trained equal (``row["paired"]``, and a line in its note)."""
    by_name = {r["system"]: r for r in rows}
    out = []
    for what, a, b in pairs([r["system"] for r in rows]):
        if a not in per_query or b not in per_query:
            continue
        test = compare_per_query(per_query[a], per_query[b])
        comparison = {"split": split, "what": what, "a": a, "b": b, "measure": MEASURE, **test.as_dict()}
        out.append(comparison)
        if a.startswith(NOPT) and b.startswith(PT):
            row = by_name[a]
            row["paired"] = {"against": b, **test.as_dict()}
            line = (f"pre-trained {test.delta:+.4f} [{test.ci_low:+.4f}, {test.ci_high:+.4f}], "
                    f"p {format_p(test.p_t)} (t) / {format_p(test.p_rand)} (rand.)")
            row["note"] = "; ".join(x for x in (row.get("note", ""), line) if x)
    return out


def table(comparisons: list[dict]) -> list[str]:
    """Markdown lines: one row per comparison."""
    lines = ["| split | comparison | A | B | A nDCG@10 | B nDCG@10 | B - A (95% CI) | t-test p | randomisation p | "
             "queries |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['split']} | {c['what']} | {c['a']} | {c['b']} | {c['mean_a']:.4f} | {c['mean_b']:.4f} | "
              f"{c['delta']:+.4f} ({c['ci_low']:+.4f}, {c['ci_high']:+.4f}) | {format_p(c['p_t'])} | "
              f"{format_p(c['p_rand'])} | {c['n']} |" for c in comparisons]
    return lines
