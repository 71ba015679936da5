"""The evaluation report: one table beside the paper's numbers and BM25, and the plots."""
from __future__ import annotations

import math
from pathlib import Path

from ..runs import HYBRID_BM25
from .baselines import BACKBONE, BM25_BACKBONE, LABELS
from .suites import DROP_QUERY_ID_DATASETS, SYSTEMS


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def beir_rows(results: list[dict], datasets: list[str], measures: tuple[str, ...]) -> list[dict]:
    """One row per requested BEIR collection; cqadupstack is the mean of its forums."""
    by_unit = {r["unit"]: r for r in results}
    rows = []
    for name in datasets:
        if name == "cqadupstack":
            forums = [r for k, r in by_unit.items() if k.startswith("cqadupstack/")]
            ok = [r for r in forums if r["status"] == "ok"]
            if forums and len(ok) == len(forums):
                systems = ok[0]["scores"].keys()
                scores = {s: {m: sum(r["scores"][s][m] for r in ok) / len(ok) for m in measures} for s in systems}
                rows.append(dict(collection=name, status="ok", scores=scores, note=f"mean of {len(ok)} forums"))
            else:
                missing = [r["unit"] for r in forums if r["status"] != "ok"]
                reason = by_unit.get(missing[0], {}).get("reason", "") if missing else "not run"
                rows.append(dict(collection=name, status="missing",
                                 reason=f"{len(missing)} of {len(forums)} forums missing ({reason})"))
            continue
        r = by_unit.get(name)
        if r is None:
            continue
        rows.append(dict(collection=name, status=r["status"], scores=r.get("scores"), reason=r.get("reason"),
                         note="query id dropped from its hits" if name in DROP_QUERY_ID_DATASETS else "",
                         coverage_warning=r.get("coverage_warning")))
    return rows


def paired_lines(results: list[dict], key: str = "paired", reference: str = "BM25") -> list[str]:
    """Markdown lines: each collection's runs tested against its ``reference`` run (``results[i][key]``:
    ``paired`` against BM25, ``paired_backbone`` against BM25 + backbone)."""
    from .significance import format_p

    tested = [(r["unit"], system, t) for r in results if r.get("status") == "ok"
              for system, t in (r.get(key) or {}).items()]
    if not tested:
        return []
    lines = ["", f"Paired tests against {reference}, per collection over its judged queries: the mean per-query "
                 f"difference (system - {reference}) with its 95% t interval, the paired t-test and the paired "
                 "randomisation test (two-sided; `dupmae_ir.eval.significance`).", "",
             f"| collection | measure | system | {reference} | system | difference (95% CI) | t-test p "
             "| randomisation p | queries |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {unit} | {t['measure']} | {system} | {t['mean_a']:.4f} | {t['mean_b']:.4f} | {t['delta']:+.4f} "
              f"({t['ci_low']:+.4f}, {t['ci_high']:+.4f}) | {format_p(t['p_t'])} | {format_p(t['p_rand'])} | {t['n']} |"
              for unit, system, t in tested]
    return lines


def write_report(out: Path, suite: str, rows: list[dict], measures: tuple[str, ...], paper: dict,
                 meta: dict, requested: list[str], paired: list[str] = ()) -> None:
    from ..provenance import atomic_write_text, write_json

    primary = measures[0]
    systems = [s for s in SYSTEMS if s in requested or any(r.get("scores") and s in r["scores"] for r in rows)]
    lines = [f"# DupMAE evaluation: {suite} (encoder `{meta['encoder']}`)", ""]
    lines.append(("Each row names its measure" if suite == "msmarco" else primary)
                 + "; 'paper' columns are published numbers (DupMAE paper, tables 2-3"
                 + ("; BM25 from Pyserini's published regressions" if suite == "msmarco" else "") + ").")
    lines.append("")
    head = ["collection", *[f"paper {p}" for p in paper["columns"]], *systems, "note"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pap = [_fmt(v) for v in paper["values"](r["collection"], primary)]
        if r["status"] == "ok":
            cells = [_fmt(r["scores"].get(s, {}).get(primary)) for s in systems]
            note = r.get("note", "")
        else:
            cells = ["missing"] * len(systems)
            note = r.get("reason", "")
        lines.append("| " + " | ".join([r["collection"], *pap, *cells, note]) + " |")
    ok = [r for r in rows if r["status"] == "ok"]
    if suite == "beir" and ok:
        avg = [_fmt(sum(r["scores"][s][primary] for r in ok) / len(ok)) if all(s in r["scores"] for r in ok)
               else "-" for s in systems]
        lines.append("| " + " | ".join([f"average over {len(ok)} scored", *["-"] * len(paper["columns"]),
                                         *avg, "paper averages are over 18"]) + " |")
    lines += system_legend(systems, meta.get("baseline_backbone"))
    if len(measures) > 1:
        lines += ["", "All measures:", "", "| collection | system | " + " | ".join(measures) + " |",
                  "|---|---|" + "---|" * len(measures)]
        for r in ok:
            for s in systems:
                sc = r["scores"].get(s, {})
                lines.append(f"| {r['collection']} | {s} | " + " | ".join(_fmt(sc.get(m)) for m in measures) + " |")
    lines += list(paired)
    missing = [r for r in rows if r["status"] != "ok"]
    lines += ["", f"Scored: {len(ok)}; missing: {len(missing)}."]
    lines.append("Means are over the judged queries that were run (pytrec_eval/BEIR convention).")
    lines += [f"- warning: {r['collection']}: {r['coverage_warning']}" for r in rows if r.get("coverage_warning")]
    if suite == "beir":
        lines.append("Conventions: test split; cqadupstack = mean of 12 forums; on ArguAna and Quora a hit whose "
                     "docid equals the query id is removed (BEIR), for all systems.")
    lines += ["", f"Generated by dupmae_ir {meta['dupmae_ir_version']} at {meta['created']}: `{meta['command']}`."]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    write_json(out / "report.json", {**meta, "suite": suite, "measures": list(measures), "rows": rows})


def system_legend(systems: list[str], backbone: str | None) -> list[str]:
    """Lines naming the fused and baseline columns, when the table has them."""
    words = {BACKBONE: f"{LABELS[BACKBONE]} of `{backbone}`, exhaustive in memory",
             BM25_BACKBONE: f"{LABELS[BM25_BACKBONE]} (min-max per query, summed: `pyserini.fusion --method "
                            "normalize`)",
             HYBRID_BM25: "the hybrid run fused with BM25 the same way (`dupmae_ir.search --mode hybrid+bm25`)"}
    named = [f"{s}: {words[s]}" for s in systems if s in words]
    return ["", "Columns: " + "; ".join(named) + "."] if named else []


def write_plots(out: Path, rows: list[dict], measure: str, paper: dict) -> list[Path]:
    """``plot.png``: grouped bars (systems x collections); ``plots/<collection>.png``: one per collection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    systems = [s for s in SYSTEMS if any(s in r["scores"] for r in ok)]
    series = [(f"paper {c}", [paper["values"](r["collection"], measure)[i] for r in ok])
              for i, c in enumerate(paper["columns"])]
    series += [(s, [r["scores"].get(s, {}).get(measure) for r in ok]) for s in systems]
    written = []

    def bars(ax, labels, groups):
        width = 0.8 / max(1, len(groups))
        for i, (label, vals) in enumerate(groups):
            xs = [j + i * width for j in range(len(labels))]
            ax.bar(xs, [v if v is not None else 0 for v in vals], width, label=label)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels, rotation=30, ha="right")
        ax.set_ylabel(measure)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)

    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(ok) + 3), 4))
    bars(ax, [r["collection"] for r in ok], series)
    ax.set_title(f"{measure} per collection")
    fig.tight_layout()
    _save_fig(fig, out / "plot.png")
    written.append(out / "plot.png")
    for j, r in enumerate(ok):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        names = [name for name, _ in series]
        vals = [v[j] if v[j] is not None else 0 for _, v in series]
        ax.bar(names, vals, color=[f"C{i}" for i in range(len(names))])
        for x, v in enumerate(vals):
            ax.text(x, v + 0.01, f"{v:.3f}", ha="center", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel(measure)
        ax.set_title(r["collection"])
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        fig.tight_layout()
        path = out / "plots" / f"{r['collection'].replace('/', '__')}.png"
        _save_fig(fig, path)
        written.append(path)
    return written


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ..provenance import atomic_write

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
