"""Evaluate DupMAE on BEIR and MS MARCO: ``python -m dupmae_ir.eval beir`` / ``... msmarco``.

For each collection: encode it (``dupmae_ir.encode``; an index that already exists is reused), search
dense, impact and hybrid (:mod:`dupmae_ir.search`), run the BM25 baseline (:mod:`dupmae_ir.bm25`),
and score every run with ir-measures. Results go under ``eval/<suite>/<encoder>/``:

- ``results/<collection>.json``: one file per finished collection (an interrupted eval resumes from
  them; ``--force-search`` searches and scores again, still reusing the indexes);
- ``report.md`` / ``report.json``: the table beside the paper's numbers (DUPMAE.md section 5) and BM25;
- ``plot.png`` (all collections) and ``plots/<collection>.png`` (the systems on one collection).

BEIR conventions followed: the test split (webis-touche2020 v2); cqadupstack is the mean of its 12
forums (reported only when all 12 are scored); on ArguAna and Quora a hit whose docid equals the query
id is dropped before scoring (BEIR's ``ignore_identical_ids``), for every system including BM25.
MS MARCO: dev small (RR@10, R@1000), TREC DL19 and DL20 (nDCG@10).

Data come from ir_datasets ids, or with ``--data-dir`` from local folders only
(``<data-dir>/<name>`` in BEIR layout; ``<data-dir>/msmarco-passage`` for ``msmarco``): a collection
whose folder or documents are absent is reported as missing, never fetched and never a crash.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import add_debug_flag, run_command
from .runs import Scores, score_run, write_trec  # noqa: F401  (score_run: the eval front door's scorer)
from .search import DROP_QUERY_ID_DATASETS, MODES, fusion_from_args

BEIR_MEASURES = ("nDCG@10", "R@100", "R@1000")
MSMARCO_SPLITS = ("dev-small", "dl19", "dl20")
MSMARCO_MEASURES = {"dev-small": ("RR@10", "R@1000"), "dl19": ("nDCG@10",), "dl20": ("nDCG@10",)}

# Published nDCG@10 (DUPMAE.md section 5): BM25 / RetroMAE / DupMAE, zero-shot after MS MARCO fine-tuning.
PAPER_BEIR = {
    "trec-covid": (0.656, 0.772, 0.728), "bioasq": (0.465, 0.421, 0.508), "nfcorpus": (0.325, 0.308, 0.346),
    "nq": (0.329, 0.518, 0.570), "hotpotqa": (0.603, 0.635, 0.681), "fiqa": (0.236, 0.316, 0.345),
    "signal1m": (0.330, 0.265, 0.213), "trec-news": (0.398, 0.428, 0.427), "robust04": (0.408, 0.447, 0.479),
    "arguana": (0.315, 0.433, 0.474), "webis-touche2020": (0.367, 0.237, 0.343),
    "cqadupstack": (0.299, 0.317, 0.320), "quora": (0.789, 0.847, 0.845), "dbpedia-entity": (0.313, 0.390, 0.418),
    "scidocs": (0.158, 0.150, 0.153), "fever": (0.753, 0.774, 0.800), "climate-fever": (0.213, 0.232, 0.232),
    "scifact": (0.665, 0.653, 0.699),
}
PAPER_BEIR_AVERAGE = (0.423, 0.452, 0.477)
# MS MARCO passage: DupMAE stage 3 (paper) and Pyserini's published BM25 (k1=0.9, b=0.4).
PAPER_MSMARCO = {"dev-small": {"RR@10": 0.426, "R@1000": 0.989}, "dl19": {"nDCG@10": 0.751}, "dl20": {}}
PYSERINI_BM25_MSMARCO = {"dev-small": {"RR@10": 0.184, "R@1000": 0.853}, "dl19": {"nDCG@10": 0.506},
                         "dl20": {"nDCG@10": 0.480}}
SYSTEMS = ("bm25", *MODES)


@dataclass(frozen=True)
class Unit:
    """One scored thing: a collection (or a cqadupstack forum) and a query split."""

    name: str  # e.g. "scifact", "cqadupstack/android", "msmarco-passage"
    source: str  # name for dupmae_ir.data.resolve
    split: str
    measures: tuple[str, ...]
    key: str  # result file stem / report row, e.g. "scifact", "cqadupstack/android", "dl19"


def beir_units(datasets: list[str], measures: tuple[str, ...] | None) -> list[Unit]:
    from .data.resolve import BEIR_DATASETS, CQADUPSTACK_FORUMS

    units = []
    for name in datasets:
        if name not in BEIR_DATASETS and not name.startswith("cqadupstack/"):
            raise SystemExit(f"--datasets: unknown BEIR collection {name!r}; valid: {', '.join(BEIR_DATASETS)} "
                             "(or cqadupstack/<forum>).")
        split = "v2" if name == "webis-touche2020" else "test"
        names = [f"cqadupstack/{f}" for f in CQADUPSTACK_FORUMS] if name == "cqadupstack" else [name]
        for n in names:
            units.append(Unit(n, f"beir/{n}", split, measures or BEIR_MEASURES, n))
    return units


def msmarco_units(measures: tuple[str, ...] | None) -> list[Unit]:
    return [Unit("msmarco-passage", "msmarco-passage", s, measures or MSMARCO_MEASURES[s], s) for s in MSMARCO_SPLITS]


def resolve_unit(unit: Unit, data_dir: str | None):
    """The Collection of a unit, or a string saying why it is missing."""
    from .data import DataError, resolve

    if data_dir is not None:
        short = unit.source[len("beir/"):] if unit.source.startswith("beir/") else unit.source
        folder = Path(data_dir) / short
        if not folder.is_dir():
            return f"no folder {folder}"
        try:
            coll = resolve(folder)
        except DataError as e:
            return str(e)
        if not coll.has_corpus():
            return f"no corpus (corpus.jsonl[.gz]) in {folder}"
        return coll
    try:
        coll = resolve(unit.source)
    except DataError as e:
        return str(e)
    if not coll.has_corpus():
        return f"{unit.source}: ir_datasets does not distribute its documents; use --data-dir"
    return coll


def _split_for(coll, unit: Unit) -> str:
    """Local BEIR folders name the touche v2 split 'test'."""
    if coll.kind == "beir" and unit.split not in coll.splits() and "test" in coll.splits():
        return "test"
    return unit.split


def encoder_tag(encoder: str) -> str:
    return "default" if encoder == "default" else Path(encoder.rstrip("/")).name


class Evaluator:
    """Runs one suite; every finished unit is a file under ``results/``."""

    def __init__(self, suite: str, args):
        self.suite = suite
        self.args = args
        self.tag = encoder_tag(args.encoder)
        self.out = Path(args.output) / suite / self.tag
        self.index_root = Path(args.index_root)
        self.runs_root = Path(args.runs) / suite
        self.fusion = fusion_from_args(args)

    def result_path(self, unit: Unit) -> Path:
        return self.out / "results" / f"{unit.key.replace('/', '__')}.json"

    def run_unit(self, unit: Unit, queries_cache: dict) -> dict:
        from .provenance import provenance, write_json

        path = self.result_path(unit)
        if path.is_file() and not self.args.force_search:
            done = json.loads(path.read_text())
            if done.get("status") == "ok" and set(unit.measures) <= set(next(iter(done["scores"].values()), {})):
                done["reused"] = True
                return done
        coll = resolve_unit(unit, self.args.data_dir)
        if isinstance(coll, str):
            # missing collections get no result file: they are checked again on every run
            return {"unit": unit.key, "collection": unit.name, "status": "missing", "reason": coll}
        timings = {}
        t = time.perf_counter()
        index = self.index_root / self.tag / unit.name
        if not (index / "dupmae_index.json").is_file():
            from .encode import encode_corpus

            encode_corpus(coll, index, encoder=self.args.encoder)
        timings["encode"] = time.perf_counter() - t
        split = _split_for(coll, unit)
        queries, qrels = coll.queries(split), coll.qrels(split)
        drop = unit.name in DROP_QUERY_ID_DATASETS
        runs = {}
        t = time.perf_counter()
        if self.args.modes:
            cache_key = (unit.name, "searcher")
            from .search import DupMAESearcher

            # the query encoder is the one recorded in the index (dupmae_index.json)
            searcher = queries_cache.get(cache_key) or DupMAESearcher(index, threads=self.args.threads)
            queries_cache.clear()
            queries_cache[cache_key] = searcher  # msmarco: one searcher for its three splits
            runs.update(searcher.search_all(queries, self.args.modes, self.args.hits, self.args.depth,
                                            self.fusion, self.args.batch_size, drop_query_id=drop))
        timings["search"] = time.perf_counter() - t
        if not self.args.no_bm25:
            from .bm25 import bm25_search, build_bm25_index

            t = time.perf_counter()
            bm25_index = build_bm25_index(coll, self.index_root / "bm25" / unit.name, threads=self.args.threads)
            timings["bm25_index"] = time.perf_counter() - t
            t = time.perf_counter()
            runs["bm25"] = bm25_search(bm25_index, queries, self.args.hits, threads=self.args.threads,
                                       drop_query_id=drop)
            timings["bm25_search"] = time.perf_counter() - t
        scores, run_files, coverage = {}, {}, None
        for system, run in runs.items():
            run_path = self.runs_root / (self.tag if system != "bm25" else "bm25") / f"{unit.key}.{system}.trec"
            write_trec(run_path, run, f"{self.tag}-{system}" if system != "bm25" else "bm25",
                       dict(collection=unit.name, split=split, system=system, index=str(index),
                            drop_query_id=drop, hits=self.args.hits), overwrite=True)  # eval's own runs
            run_files[system] = str(run_path)
            scored = score_run(run, qrels, unit.measures)
            scores[system] = scored.values
            coverage = scored
        warning = coverage.warning() if coverage else None
        if warning:
            from tqdm import tqdm

            tqdm.write(f"warning: {unit.key}: {warning}")
        result = provenance(unit=unit.key, collection=unit.name, split=split, status="ok", scores=scores,
                            queries=len(queries), judged_queries=len(qrels),
                            **(coverage.coverage() if coverage else {}), coverage_warning=warning,
                            drop_query_id=drop,
                            encoder=self.args.encoder, index=str(index), runs=run_files,
                            fusion=asdict(self.fusion),
                            seconds={k: round(v, 2) for k, v in timings.items()})
        write_json(path, result)
        return result

    def run(self, units: list[Unit]) -> list[dict]:
        from tqdm import tqdm

        results, cache = [], {}
        bar = tqdm(units, desc=f"eval {self.suite}", unit="collection")
        for unit in bar:
            bar.set_postfix_str(unit.key)
            res = self.run_unit(unit, cache)
            results.append(res)
            if res["status"] != "ok":
                tqdm.write(f"{unit.key}: missing ({res['reason']})")
            else:
                tqdm.write(f"{unit.key}: " + "  ".join(
                    f"{s} {m}={v:.4f}" for s, sc in res["scores"].items() for m, v in sc.items() if m == unit.measures[0]))
        return results


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
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


def write_report(out: Path, suite: str, rows: list[dict], measures: tuple[str, ...], paper: dict,
                 meta: dict, requested: list[str]) -> None:
    from .provenance import atomic_write_text, write_json

    primary = measures[0]
    systems = [s for s in SYSTEMS if s in requested or any(r.get("scores") and s in r["scores"] for r in rows)]
    lines = [f"# DupMAE evaluation: {suite} (encoder `{meta['encoder']}`)", ""]
    lines.append(("Each row names its measure" if suite == "msmarco" else primary) + "; 'paper' columns are published numbers (DUPMAE.md section 5"
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
    if len(measures) > 1:
        lines += ["", "All measures:", "", "| collection | system | " + " | ".join(measures) + " |",
                  "|---|---|" + "---|" * len(measures)]
        for r in ok:
            for s in systems:
                sc = r["scores"].get(s, {})
                lines.append(f"| {r['collection']} | {s} | " + " | ".join(_fmt(sc.get(m)) for m in measures) + " |")
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

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .data.resolve import BEIR_DATASETS

    p = argparse.ArgumentParser(prog="python -m dupmae_ir.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="suite", required=True, metavar="{beir,msmarco}")
    for suite in ("beir", "msmarco"):
        sp = sub.add_parser(suite, help=f"evaluate on {'BEIR' if suite == 'beir' else 'MS MARCO passage'}",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        d = sp.add_argument_group("data")
        if suite == "beir":
            d.add_argument("--datasets", nargs="+", default=list(BEIR_DATASETS), metavar="NAME",
                           help="BEIR collections (cqadupstack = its 12 forums; cqadupstack/<forum> also works)")
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
        m.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES), help="DupMAE systems to run")
        m.add_argument("--no-bm25", action="store_true", help="skip the BM25 baseline")
        m.add_argument("--force-search", action="store_true",
                       help="search and score again even when a collection's result file exists (indexes are reused)")
        s = sp.add_argument_group("search")
        s.add_argument("--hits", type=int, default=1000, help="hits per query")
        s.add_argument("--batch-size", type=int, default=64, help="queries per search batch")
        s.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="search threads")
        f = sp.add_argument_group("fusion (hybrid)")
        f.add_argument("--fusion", choices=("sum", "normalized", "rrf"), default="sum",
                       help="sum = DupMAE's dense + de-quantised sparse")
        f.add_argument("--alpha", type=float, default=None, help="sparse weight (default 1/(s_q*s_d) for sum)")
        f.add_argument("--weight-on-dense", action="store_true")
        f.add_argument("--depth", type=int, default=None, help="hits from each side before fusion (default --hits)")
        f.add_argument("--rrf-k", type=int, default=60)
        add_debug_flag(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    measures = tuple(args.measures) if args.measures else None
    if measures:
        import ir_measures

        for mstr in measures:
            try:
                ir_measures.parse_measure(mstr)
            except Exception as e:  # noqa: BLE001 - ir-measures raises several types
                raise SystemExit(f"--measures: {mstr!r} is not an ir-measures string ({e}); "
                                 "examples: nDCG@10 R@1000 RR@10 'R(rel=2)@1000' P@5") from None
    from .provenance import provenance

    t0 = time.perf_counter()
    ev = Evaluator(args.suite, args)
    if args.suite == "beir":
        units = beir_units(args.datasets, measures)
        results = ev.run(units)
        all_measures = measures or BEIR_MEASURES
        rows = beir_rows(results, args.datasets, all_measures)
        paper = {"columns": ("BM25", "RetroMAE", "DupMAE"),
                 "values": lambda c, m: PAPER_BEIR.get(c, (None,) * 3) if m == "nDCG@10" else (None,) * 3}
    else:
        units = msmarco_units(measures)
        results = ev.run(units)
        all_measures = measures or ("RR@10", "R@1000", "nDCG@10")
        rows = [dict(collection=r["unit"], status=r["status"], scores=r.get("scores"), reason=r.get("reason"),
                     coverage_warning=r.get("coverage_warning")) for r in results]
        paper = {"columns": ("BM25", "DupMAE"),
                 "values": lambda c, m: (PYSERINI_BM25_MSMARCO.get(c, {}).get(m), PAPER_MSMARCO.get(c, {}).get(m))}
    meta = provenance(artifact="eval_report", encoder=args.encoder, data_dir=args.data_dir,
                      seconds=round(time.perf_counter() - t0, 2))
    if args.suite == "msmarco":  # each split has its own measures: one table row per split and measure
        rows = [dict(r, collection=f"{r['collection']} {m}",
                     scores={s: {"score": v[m]} for s, v in r["scores"].items()} if r.get("scores") else None)
                for r in rows for m in (MSMARCO_MEASURES[r["collection"]] if not measures else measures)]
        paper_vals = paper["values"]
        paper["values"] = lambda c, m: paper_vals(c.split(" ")[0], c.split(" ")[1]) if " " in c else (None, None)
        all_measures = ("score",)
    requested = ([] if args.no_bm25 else ["bm25"]) + list(args.modes)
    write_report(ev.out, args.suite, rows, all_measures, paper, meta, requested)
    plots = write_plots(ev.out, rows, all_measures[0], paper)
    print(f"report: {ev.out / 'report.md'}; plots: {len(plots)}; {meta['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
