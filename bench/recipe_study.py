"""Choices of the CPU recipe made on a dev split carved from SciFact train (never on test), and the
recipe's spread over seeds. Each subcommand writes a Markdown report (command, date, machine, commit).

    python bench/recipe_study.py select  [--learning-rates 5e-5,1.5e-4] [--calibration on,off]
                                         [--report eval/recipe-selection.md]
    python bench/recipe_study.py stage2  --stage1 CKPT [--variants 50:0:1,200:0:1] [--report eval/stage2-selection.md]
    python bench/recipe_study.py pruning --model CKPT [--report eval/query-pruning.md]
    python bench/recipe_study.py seeds   [--seeds 1,2,3] [--report eval/recipe-seeds.md]
    python bench/recipe_study.py pretraining [--variant SPEC ...] [--stages 1|1,2] [RECIPE FLAGS]
                                         [--report eval/pretraining-selection.md]

- ``select``: DupMAE pre-training once, then fine-tuning stage 1 with each learning rate, sparse
  scale calibration on/off and FLOPS weights (``--variants``), on the training queries minus a seeded
  20% dev part, scored on that dev part (hybrid nDCG@10, exhaustive in memory), with the mean impact
  terms per query and per document; the best is the recipe's default. A variant whose
  ``results.json`` holds the same settings is read back, not re-run: the study resumes.
- ``stage2``: from one stage-1 checkpoint fine-tuned without the dev part (``select``'s), stage 2 with
  each mining depth, skip and number of epochs (``--variants DEPTH:SKIP:EPOCHS``), scored on the dev
  part like ``select``; a variant that already ran (same settings in ``results.json``) is read back.
- ``pruning``: for a checkpoint fine-tuned without the dev part, the dev hybrid nDCG@10 and the mean
  impact terms per query for query top-k 16..1024 and minimum weights; the smallest pruning within
  0.002 of the unpruned dev score is chosen.
- ``seeds``: the whole recipe with each seed, both arms (pre-trained and not, at every stage), through
  the product; mean and standard deviation of every row on the test split, and per stage and mode the
  two arms side by side with paired tests: over the queries (each query's nDCG@10 averaged over the
  seeds) and over the seeds (each seed's mean). A seed whose ``results.json`` exists (with both arms
  and per-query values) is read back (``--fresh`` re-runs it); the report is rewritten after every seed.
- ``pretraining``: DupMAE pre-training settings (``--variant steps=800,lr=1e-4``, repeated) at equal
  fine-tuning against no pre-training, scored on ``select``'s dev part (hybrid, dense, impact, grounded
  share, paired tests); ``bench/pretrain_study.py`` (``recipe_study.py pretraining --help``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import _harness
import pretrain_study

TOPKS = (16, 32, 64, 128, 256, 1024)
MIN_WEIGHTS = (0.0, 0.05, 0.1, 0.2)


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def write_report(path: str, title: str, what: str, body: list[str]) -> None:
    text = _harness.header(title, what) + "\n" + "\n".join(body) + "\n"
    _harness.write_report(path, text)
    print(text)


def _same_variant(path: Path, variant: tuple, args) -> bool:
    config = json.loads(path.read_text(encoding="utf-8")).get("config", {})
    lr, cal, fq, fd = variant
    return (config.get("learning_rate") == lr and config.get("sparse_scale_calibration") == cal
            and config.get("flops_query", 0.0) == fq and config.get("flops_doc", 0.0) == fd
            and config.get("holdout_fraction") == args.holdout and config.get("seed") == args.seed)


def _parse_variant(text: str) -> tuple[float, bool, float, float]:
    """``LR:on|off[:FLOPS_QUERY:FLOPS_DOC]`` -> (lr, calibration, flops_query, flops_doc)."""
    parts = text.split(":")
    if len(parts) not in (2, 4) or parts[1] not in ("on", "off"):
        raise SystemExit(f"--variants: {text!r}; expected LR:on|off or LR:on|off:FLOPS_QUERY:FLOPS_DOC")
    flops = (float(parts[2]), float(parts[3])) if len(parts) == 4 else (0.0, 0.0)
    return float(parts[0]), parts[1] == "on", *flops


EXAMPLE_QUERY = "0-dimensional biomaterials show inductive properties."


def sparsity(model_path: str, queries: list[str], docs: list[str], doc_max_length: int) -> dict:
    """Mean impact terms per query (unpruned) and per document (the checkpoint's doc top-k), and the
    example query's ten heaviest terms, for one checkpoint."""
    from dupmae_ir.modeling.model import DupMAEModel
    from dupmae_ir.precision import resolve_dtype
    from dupmae_ir.search.exact import ExactSearcher

    model, tok = DupMAEModel.from_pretrained(model_path)
    retriever = ExactSearcher(model, tok, doc_max_length=doc_max_length, query_topk=1024,
                              dtype=resolve_dtype("auto", "cpu"))
    _, _, q = retriever._encode(queries, retriever.query_max_length, 1024)
    _, _, d = retriever._encode(docs, retriever.doc_max_length, retriever.doc_topk)
    _, _, ex = retriever._encode([EXAMPLE_QUERY], retriever.query_max_length, 1024)
    ex = ex.to_dense()[0]
    top = ex.topk(10)
    return {"query_terms": float(q.crow_indices().diff().float().mean()),
            "doc_terms": float(d.crow_indices().diff().float().mean()),
            "example": [(tok.convert_ids_to_tokens(int(i)), round(float(v), 1))
                        for v, i in zip(top.values, top.indices) if v > 0],
            "example_terms": int((ex > 0).sum())}


def select(args) -> None:
    import random

    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.data.splits import dev_split
    from dupmae_ir.recipe import Recipe, RecipeConfig

    variants = ([_parse_variant(v) for v in args.variants.split(",")] if args.variants
                else [(float(lr), cal == "on", 0.0, 0.0) for lr in args.learning_rates.split(",")
                      for cal in args.calibration.split(",")])
    coll = resolve("default")
    dev_q, _ = dev_split(coll, "train", args.holdout, 13)
    docs = [doc_text(d) for d in coll.iter_docs()]
    docs = random.Random(13).sample(docs, min(args.sparsity_docs, len(docs)))  # a seeded sample: terms per document
    results, pretrained = [], None
    for i, variant in enumerate(variants):
        lr, cal, fq, fd = variant
        cfg = RecipeConfig.of(output=f"{args.work}/select-{i}", stages=(1,), ablation=False, test=False,
                           holdout_fraction=args.holdout, learning_rate=lr, sparse_scale_calibration=cal,
                           flops_query=fq, flops_doc=fd,
                           pretrained=pretrained, report_root=f"{args.work}/eval", seed=args.seed)
        done = Path(cfg.layout.output) / "results.json"
        if done.exists() and _same_variant(done, variant, args):  # resumed: this variant already ran
            result = json.loads(done.read_text(encoding="utf-8"))
            seconds = result["times"]["total"]
        else:
            start = time.time()
            result = Recipe(cfg, progress=False, overwrite=True).run()
            seconds = time.time() - start
        pretrained = pretrained or f"{args.work}/select-0/pretrained"
        row = result["dev_rows"][-1]
        stats = sparsity(f"{cfg.layout.output}/pt-stage1", list(dev_q.values()), docs, cfg.eval.eval_doc_max_length)
        results.append((variant, row["nDCG@10"], row["R@100"], seconds, stats))
        print(results[-1], flush=True)
    best = max(results, key=lambda r: r[1])
    body = ["| fine-tuning lr | sparse scale calibration | FLOPS query / doc | dev nDCG@10 (hybrid) | dev R@100 "
            "| query terms (unpruned, mean) | document terms (mean) | seconds |",
            "|---|---|---|---|---|---|---|---|"]
    body += [f"| {v[0]:g} | {'on' if v[1] else 'off'} | {v[2]:g} / {v[3]:g} | {n:.4f} | {r:.4f} | "
             f"{st['query_terms']:.1f} | {st['doc_terms']:.1f} | {t:.0f} |" for v, n, r, t, st in results]
    body += ["", f"Chosen: lr {best[0][0]:g}, sparse scale calibration {'on' if best[0][1] else 'off'}, FLOPS "
                 f"{best[0][2]:g} / {best[0][3]:g} (best dev hybrid nDCG@10). Stage 1 only, one epoch, group 8, "
                 f"seed {args.seed}, queries pruned to the recipe's top-k for the dev score; the dev split is "
                 f"{args.holdout:.0%} of SciFact train (seed 13), held out of fine-tuning; the test split is not "
                 f"read. Terms: the dev queries unpruned, and {len(docs)} documents sampled with seed 13 at the "
                 "checkpoint's document top-k.", "",
             f"The example query \"{EXAMPLE_QUERY}\", heaviest terms per variant:", ""]
    body += [f"- FLOPS {v[2]:g} / {v[3]:g}: {st['example_terms']} terms; "
             + ", ".join(f"`{t}` {w:g}" for t, w in st["example"]) for v, n, r, t, st in results]
    write_report(args.report, "Recipe selection on the SciFact dev split",
                 "The fine-tuning learning rate, the sparse scale calibration and the FLOPS regularisation of the "
                 "CPU recipe, chosen on a dev split carved from the training queries "
                 "(`bench/recipe_study.py select`).", body)


def _parse_stage2(text: str) -> tuple[int, int, float]:
    """``DEPTH:SKIP:EPOCHS`` -> (mine depth, mine skip, stage-2 epochs)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise SystemExit(f"--variants: {text!r}; expected DEPTH:SKIP:EPOCHS, e.g. 200:0:1")
    return int(parts[0]), int(parts[1]), float(parts[2])


def stage2(args) -> None:
    from dupmae_ir.modeling.model import RepresentationConfig
    from dupmae_ir.recipe import Recipe, RecipeConfig

    ft = RepresentationConfig.load(args.stage1).finetuning or {}
    if ft.get("holdout_fraction") != args.holdout or ft.get("stage") not in (1, None):
        raise SystemExit(f"{args.stage1}: a stage-1 checkpoint fine-tuned with holdout_fraction={args.holdout} is "
                         f"needed (found stage {ft.get('stage')}, holdout {ft.get('holdout_fraction')})")
    results = []
    for i, (depth, skip, epochs) in enumerate(_parse_stage2(v) for v in args.variants.split(",")):
        cfg = RecipeConfig.of(output=f"{args.work}/stage2-{i}", stages=(1, 2), stage1=args.stage1, ablation=False,
                           test=False, holdout_fraction=args.holdout, mine_depth=depth, mine_skip=skip,
                           stage2_epochs=epochs, report_root=f"{args.work}/eval", seed=args.seed)
        done = Path(cfg.layout.output) / "results.json"
        saved = json.loads(done.read_text(encoding="utf-8")) if done.exists() else {}
        keys = ("stage1", "mine_depth", "mine_skip", "stage2_epochs", "holdout_fraction", "seed")
        if all(saved.get("config", {}).get(k) == cfg.flat()[k] for k in keys):  # resumed: already ran
            result, seconds = saved, saved["times"]["total"]
        else:
            start = time.time()
            result = Recipe(cfg, progress=False, overwrite=True).run()
            seconds = time.time() - start
        row = result["dev_rows"][-1]
        results.append(((depth, skip, epochs), row["nDCG@10"], row["R@100"], seconds))
        print(results[-1], flush=True)
    best = max(results, key=lambda r: r[1])
    body = ["| mining depth | skip | stage-2 epochs | dev nDCG@10 (hybrid) | dev R@100 | seconds |",
            "|---|---|---|---|---|---|"]
    saved1 = Path(args.stage1).parent / "results.json"  # the select run that trained the stage-1 checkpoint
    for row in json.loads(saved1.read_text(encoding="utf-8")).get("dev_rows", []) if saved1.exists() else []:
        body.append(f"| (stage 1 alone) | | | {row['nDCG@10']:.4f} | {row['R@100']:.4f} | |")
    body += [f"| {v[0]} | {v[1]} | {v[2]:g} | {n:.4f} | {r:.4f} | {t:.0f} |" for v, n, r, t in results]
    body += ["", f"Best on dev: depth {best[0][0]}, skip {best[0][1]}, {best[0][2]:g} epoch(s). Stage 2 from "
                 f"`{args.stage1}` (stage 1 fine-tuned without the dev split), negatives from its own exhaustive "
                 f"hybrid ranking, seed {args.seed}; the dev split is {args.holdout:.0%} of SciFact train (seed 13), "
                 "held out of fine-tuning; the test split is not read."]
    write_report(args.report, "Stage 2 chosen on the SciFact dev split",
                 "How the recipe's stage 2 mines and trains (negatives' depth and skip, epochs), chosen on a dev "
                 "split carved from the training queries (`bench/recipe_study.py stage2`).", body)


def pruning(args) -> None:
    import torch

    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.data.splits import dev_split
    from dupmae_ir.modeling.model import DupMAEModel
    from dupmae_ir.precision import resolve_dtype
    from dupmae_ir.runs import score_run
    from dupmae_ir.search.exact import ExactSearcher

    coll = resolve(args.corpus)
    dev_q, dev_qrels = dev_split(coll, "train", args.holdout, 13)
    docs = {d.id: doc_text(d) for d in coll.iter_docs()}
    model, tok = DupMAEModel.from_pretrained(args.model)
    ft = model.config.finetuning or {}
    if ft.get("holdout_fraction") != args.holdout:
        raise SystemExit(f"{args.model} was fine-tuned with holdout_fraction={ft.get('holdout_fraction')}: its dev "
                         f"scores would be scores on training queries; fine-tune with {args.holdout}")
    retriever = ExactSearcher(model, tok, doc_max_length=args.doc_max_length, dtype=resolve_dtype("auto", "cpu"))
    retriever.index(list(docs), list(docs.values()), progress=False)
    rows = []
    for topk in TOPKS:
        for min_w in MIN_WEIGHTS:
            retriever.query_topk, retriever.query_min_weight = topk, min_w
            _, _, q_sparse = retriever._encode(list(dev_q.values()), retriever.query_max_length, topk,
                                               min_weight=min_w)
            terms = float((q_sparse.to_dense() > 0).sum(dim=1).float().mean())
            with torch.inference_mode():
                run = retriever.search(dev_q, k=1000, modes=("hybrid",))["hybrid"]
            scores = score_run(run, dev_qrels, ("nDCG@10", "R@100")).values
            rows.append((topk, min_w, terms, scores["nDCG@10"], scores["R@100"]))
            print(rows[-1], flush=True)
    full = next(r for r in rows if r[0] == max(TOPKS) and r[1] == 0.0)
    ok = [r for r in rows if r[3] >= full[3] - args.tolerance]
    chosen = min(ok, key=lambda r: (r[2], -r[3]))
    body = ["| query top-k | minimum weight | impact terms per query (mean) | dev nDCG@10 (hybrid) | dev R@100 |",
            "|---|---|---|---|---|"]
    body += [f"| {k} | {w:g} | {t:.1f} | {n:.4f} | {r:.4f} |" for k, w, t, n, r in rows]
    body += ["", f"Chosen: query top-k {chosen[0]}, minimum weight {chosen[1]:g}: {chosen[2]:.1f} terms per query "
                 f"(unpruned: {full[2]:.1f}), dev nDCG@10 {chosen[3]:.4f} against {full[3]:.4f} unpruned (the fewest "
                 f"terms within {args.tolerance} of it). Model `{args.model}`, fine-tuned without the dev split "
                 f"({args.holdout:.0%} of SciFact train, seed 13); exhaustive in-memory scoring; the test split is "
                 "not read."]
    write_report(args.report, "Query pruning chosen on the SciFact dev split",
                 "How many impact terms a DupMAE query keeps (top-k, minimum weight), chosen on a dev split carved "
                 "from the training queries (`bench/recipe_study.py pruning`).", body)


def seeds(args) -> None:
    from dupmae_ir.recipe import Recipe, RecipeConfig
    from dupmae_ir.recipe.rows import Row

    per_system: dict[str, list[tuple[float, float]]] = {}
    records: dict[str, Row] = {}  # label -> the row as a record (its fields find its pairs)
    per_query: dict[str, list[dict[str, float]]] = {}  # system -> per seed {qid: nDCG@10}
    times, done = [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = RecipeConfig.of(output=f"{args.work}/seed-{seed}", seed=seed,
                           index_root=f"{args.work}/indexes", runs_root=f"{args.work}/runs",
                           report_root=f"{args.work}/eval")
        saved = Path(cfg.layout.output) / "results.json"
        result = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() and not args.fresh else {}
        config = result.get("config", {})
        if not (config.get("seed") == seed and config.get("ablation") and "per_query" in result
                and all("model" in r for r in result["rows"])):  # typed rows (model, stages, mode)
            result = Recipe(cfg, progress=False, overwrite=True).run()  # not run yet, or without both arms
        times.append(result["times"]["total"])
        done.append(seed)
        for row in result["rows"]:
            per_system.setdefault(row["system"], []).append((row["nDCG@10"], row["R@100"]))
            records.setdefault(row["system"], Row.from_dict(row))
        for system, values in result["per_query"]["test"].items():
            per_query.setdefault(system, []).append(values)
        # after every seed: a stopped study still reports
        _seeds_report(args, per_system, per_query, times, done, list(records.values()))


def arms_table(per_system: dict, per_query: dict, rows: list) -> list[str]:
    """Per stage and mode: both arms' mean and sd over seeds, and B (pre-trained) against A (not): paired
    over the queries on each query's seed-mean nDCG@10, and paired over the seeds on their means."""
    from dupmae_ir.eval.significance import compare_per_query, format_p, paired_test
    from dupmae_ir.recipe.comparisons import pairs

    body = ["| stage: mode | no pre-training (mean ± sd) | pre-trained (mean ± sd) | pre-trained - not, per query "
            "(95% CI) | t-test p | randomisation p | over seeds: t-test p |", "|---|---|---|---|---|---|---|"]
    for what, ra, rb in pairs(rows):
        if (ra.model, rb.model) != ("nopt", "pt"):  # the pre-training pairs only
            continue
        a, b = ra.label, rb.label
        na, nb = [v[0] for v in per_system[a]], [v[0] for v in per_system[b]]
        qa, qb = _seed_mean(per_query[a]), _seed_mean(per_query[b])
        q = compare_per_query(qa, qb)
        seeds = paired_test(na, nb) if len(na) > 1 else None
        body.append(f"| {what[len('pre-training, '):]} | {statistics.mean(na):.4f} ± {sd(na):.4f} | "
                    f"{statistics.mean(nb):.4f} ± {sd(nb):.4f} | {q.delta:+.4f} ({q.ci_low:+.4f}, {q.ci_high:+.4f}) "
                    f"| {format_p(q.p_t)} | {format_p(q.p_rand)} | {format_p(seeds.p_t) if seeds else '-'} |")
    return body


def _seed_mean(values: list[dict[str, float]]) -> dict[str, float]:
    """Each query's value averaged over the seeds (the queries every seed scored)."""
    common = set.intersection(*(set(v) for v in values))
    return {q: statistics.mean(v[q] for v in values) for q in common}


def _seeds_report(args, per_system: dict, per_query: dict, times: list[float], done: list[int], rows: list) -> None:
    n = len(times)
    body = [f"| system | nDCG@10 mean | std | R@100 mean | std | per seed nDCG@10 ({', '.join(map(str, done))}) |",
            "|---|---|---|---|---|---|"]
    for system, values in per_system.items():
        nd, rc = [v[0] for v in values], [v[1] for v in values]
        body.append(f"| {system} | {statistics.mean(nd):.4f} | {sd(nd):.4f} | {statistics.mean(rc):.4f} | "
                    f"{sd(rc):.4f} | {' / '.join(f'{x:.4f}' for x in nd)} |")
    body += ["", "## Pre-trained against not pre-trained, at equal stages", "",
             *arms_table(per_system, per_query, rows),
             "", "Per query: each test query's nDCG@10 averaged over the seeds, then the paired t-test and the paired "
                 "randomisation test over the queries (scipy, `dupmae_ir.eval.significance`). Over seeds: the paired "
                 "t-test of the seeds' means (each seed trains both arms), weak with 3 seeds.",
             "", f"{n} run(s) of the recipe's defaults, both arms, one per seed (seed of pre-training and "
                 f"fine-tuning; the test split is read once per run, for the table); DupMAE rows from the indexes "
                 f"(`dupmae_ir.search`); standard deviation over seeds (n-1). Wall time per run: "
                 f"{', '.join(f'{t:.0f} s' for t in times)}."]
    write_report(args.report, "The CPU recipe over seeds (SciFact test)",
                 "Mean and standard deviation of every row of the recipe's table over seeds, pre-trained and not at "
                 "equal stages, with paired tests (`bench/recipe_study.py seeds`).", body)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="study", required=True)
    s = sub.add_parser("select")
    s.add_argument("--learning-rates", default="5e-5,1.5e-4")
    s.add_argument("--calibration", default="on,off")
    s.add_argument("--variants", default=None,
                   help="instead of the grid: LR:on|off[:FLOPS_QUERY:FLOPS_DOC],... (e.g. 5e-5:on,1.5e-4:on:1e-3:1e-3)")
    s.add_argument("--sparsity-docs", type=int, default=1000, help="documents sampled to count terms per document")
    s.add_argument("--report", default="eval/recipe-selection.md")
    s = sub.add_parser("stage2")
    s.add_argument("--stage1", required=True, help="a stage-1 checkpoint fine-tuned with the same --holdout")
    s.add_argument("--variants", default="50:0:1,200:0:1", help="DEPTH:SKIP:EPOCHS,... of stage 2")
    s.add_argument("--report", default="eval/stage2-selection.md")
    s = sub.add_parser("pruning")
    s.add_argument("--model", required=True, help="a checkpoint fine-tuned with the same --holdout")
    s.add_argument("--corpus", default="default")
    s.add_argument("--doc-max-length", type=int, default=128)
    s.add_argument("--tolerance", type=float, default=0.002)
    s.add_argument("--report", default="eval/query-pruning.md")
    s = sub.add_parser("seeds")
    s.add_argument("--seeds", default="1,2,3")
    s.add_argument("--report", default="eval/recipe-seeds.md")
    s.add_argument("--fresh", action="store_true", help="re-run seeds whose results.json already exists")
    pretrain_study.add_parser(sub)
    for sp in sub.choices.values():
        sp.add_argument("--work", default="encoders/study", help="working folder of the study's models")
        sp.add_argument("--holdout", type=float, default=0.2, help="dev fraction of the training queries")
        sp.add_argument("--seed", type=int, default=42)
    args, rest = p.parse_known_args()
    if args.study == "pretraining":  # the rest: recipe flags, the base of every arm
        pretrain_study.pretraining(args, rest)
        return 0
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    {"select": select, "stage2": stage2, "pruning": pruning, "seeds": seeds}[args.study](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
