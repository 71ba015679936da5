"""The recipe's report under ``eval/<name>/``: one table from the product's runs, the plot, the
settings and what each was chosen on, the machine and commit, and the stock Pyserini command that
reproduces the final hybrid run from the same files."""
from __future__ import annotations

import os
from pathlib import Path

from ..outputs import OutputKind

REPORT_NAME = "report.json"
REPORT_OUTPUT = OutputKind("recipe report", REPORT_NAME, ("dupmae_ir.recipe_report",))

# How each default of RecipeConfig was chosen (docs/recipe.md): what the report says, kept beside the code,
# with the RecipeConfig fields each line covers (a run that changes one says so instead).
CHOSEN_ON = [
    ("pre-training: 240 steps at lr 1e-4, MLM-head lr 1e-3",
     "steps and lr: the SciFact dev split carved from train, stages 1 and 1+2 at one stage-1 epoch, one seed, "
     "against no pre-training (eval/stages12-dev.md; 80 steps at 2e-5 tied it at stage 1, eval/stage1-dev.md); at "
     "today's two stage-1 epochs it ties none on dev at both stages and is kept for its more lexical bag-of-words "
     "(eval/stages12-dev-e2.md); masks and bag-of-words weight: the authors' code, not re-chosen",
     ("pretrain_steps", "pretrain_lr", "head_learning_rate", "pretrain_corpus", "pretrain_head_lr",
      "pretrain_encoder_mask", "pretrain_decoder_mask", "pretrain_bow_weight")),
    ("fine-tuning: group 8, two epochs in stage 1, no dropout, part loss 1, plain ReLU",
     "group, stage-1 epochs and part loss: the SciFact dev split carved from train, one change at a time at "
     "stage 1, the winner through stage 2, one seed (eval/finetune-dev.md); dropout off: for speed (1.69x a step, "
     "eval/finetune-step-speed.md), its dev quality not measured; plain ReLU: what the sparse scale calibration "
     "(chosen on dev) needs",
     ("group_size", "epochs", "dropout", "part_loss_weight", "activation")),
    ("stage 2: two epochs on the stage-1 model's own top 50",
     "the SciFact dev split carved from train (eval/stage2-selection.md)",
     ("stage2_epochs", "mine_depth", "mine_skip")),
    ("fine-tuning lr and sparse scale calibration",
     "the SciFact dev split carved from train (eval/recipe-selection.md)",
     ("learning_rate", "sparse_scale_calibration")),
    ("FLOPS regularisation off (the paper's loss)",
     "kept: 1.0 won the stage-1 study on the dev split, stages 1+2 were not studied there (eval/flops-selection.md)",
     ("flops_query", "flops_doc")),
    ("no bag-of-words loss in fine-tuning (the paper's loss)",
     "kept: 0.1 raised the grounded share by 8.8 points at stage 1 on the dev split, short of the 10 the rule "
     "fixed before the run asked (eval/grounding-dev.md)",
     ("bow_loss_weight",)),
    ("query pruning (top-k, minimum weight)", "the SciFact dev split carved from train (eval/query-pruning.md)",
     ("query_topk", "query_min_weight")),
    ("query terms: the model's expansion (all)",
     "kept: own pieces held the stage-1 dev hybrid but lost impact-only, stages 1+2 not studied (eval/stage1-dev.md)",
     ("query_terms",)),
]


def _epochs(cfg) -> str:
    """Epochs per fine-tuning stage, as the settings line says them."""
    one, two = cfg.stage_epochs(1), cfg.stage_epochs(2)
    if 2 not in cfg.plan.stages or two == one:
        return f"{one:g} epoch(s) per stage"
    return f"{one:g} epoch(s) in stage 1, {two:g} in stage 2"


def chosen_on(cfg) -> list[tuple[str, str]]:
    """CHOSEN_ON for this run: a line whose fields differ from the defaults says they were given."""
    given, default = cfg.flat(), type(cfg)().flat()
    out = []
    for setting, on, fields in CHOSEN_ON:
        changed = [f for f in fields if given[f] != default[f]]
        out.append((setting, on) if not changed else
                   (setting, "not used here: " + ", ".join(f"{f}={given[f]}" for f in changed)
                    + " given for this run"))
    return out


def stock_pyserini_command(index: Path, queries: Path, alpha: float, output: Path, hits: int = 1000) -> str:
    """The unpatched ``pyserini.search.hybrid`` command that reproduces the toolkit's hybrid run from the
    index and the pre-encoded queries (through ``dupmae_ir.pyserini_run`` for its Java 21)."""
    return (f"PYTHONHASHSEED=0 python -m dupmae_ir.pyserini_run search.hybrid "
            f"dense --index {index / 'dense'} --encoded-queries {queries / 'dense'} "
            f"sparse --index {index / 'impact'} --impact --encoder {queries / 'impact.jsonl'} --min-idf -1 "
            f"fusion --alpha {alpha!r} --hits {hits} "
            f"run --topics {queries / 'topics.tsv'} --output {output} --hits {hits} --batch-size 64 --threads 2")


def write(out: Path, ctx, overwrite: bool) -> Path:
    """Write ``report.md``, ``report.json`` and ``plot.png`` of the run ``ctx`` (a :class:`~.state.Context`)
    into ``out`` (a folder of the toolkit's)."""
    from ..outputs import atomic_output_dir
    from ..provenance import command_line, provenance, report_header, write_json

    cfg, results = ctx.cfg, ctx.results
    rows = results.rows
    data, pt, ft, plan = cfg.data, cfg.pretrain, cfg.finetune, cfg.plan
    lines = [report_header(f"DupMAE recipe on {data.corpus} ({data.test_split})",
                           "BM25, the zero-shot backbone, their fusion, and DupMAE models (pre-training, fine-tuning "
                           "stages, the same stages without pre-training) encoded into FAISS + Lucene impact indexes, "
                           "searched with `dupmae_ir.search` and scored with ir-measures (`dupmae_ir.recipe`).",
                           [command_line()]),
             "| system | nDCG@10 | R@100 | from | note |", "|---|---|---|---|---|"]
    lines += [f"| {r.label} | {r.ndcg:.4f} | {r.scores['R@100']:.4f} | {r.source} | {r.note} |" for r in rows]
    lines += ["", "DupMAE rows come from the indexes (the product path); 'in memory' is the exhaustive float "
                  "scoring used for stage-2 mining, shown in the notes for the same models.", ""]
    if results.dev_rows:
        lines += ["Dev split (queries held out of fine-tuning, used for choices):", "",
                  "| system | nDCG@10 | R@100 |", "|---|---|---|"]
        lines += [f"| {r.label} | {r.ndcg:.4f} | {r.scores['R@100']:.4f} |" for r in results.dev_rows]
        lines.append("")
    lines += comparisons_section(results.comparisons) + grounding_section(results.grounding, rows)
    lines += ["## Settings", "",
              f"Backbone `{data.backbone}`; training precision {ctx.inputs.training_precision}, evaluation "
              f"precision {ctx.inputs.eval_precision}; lengths: query {ft.query_max_length}, document "
              f"{ft.doc_max_length} (evaluation {cfg.eval.eval_doc_max_length}); pre-training {pt.pretrain_steps} "
              f"steps at lr {pt.pretrain_lr:g} on `{pt.pretrain_corpus or data.corpus}`; fine-tuning stages "
              f"{'+'.join(map(str, plan.stages))}, "
              f"group {ft.group_size}, lr {ft.learning_rate:g}, {_epochs(cfg)}, sparse scale "
              f"calibration {'on' if ft.sparse_scale_calibration else 'off'}, FLOPS query/document "
              f"{ft.flops_query:g}/{ft.flops_doc:g}, bag-of-words loss {ft.bow_loss_weight:g}, "
              f"query top-k {plan.query_topk}, "
              f"query minimum weight {plan.query_min_weight:g}, query terms {plan.query_terms}, "
              f"seed {cfg.training.seed}"
              + (f", {ft.holdout_fraction:.0%} of the training queries held out as dev" if ft.holdout_fraction else
                 "; fine-tuned on every training query") + ".", "",
              "| setting | chosen on |", "|---|---|", *[f"| {s} | {on} |" for s, on in chosen_on(cfg)], "",
              "## Reproduce the final hybrid run with stock Pyserini", "",
              "```bash", results.stock_command, "```", "",
              "## Files", ""]
    lines += [f"- {name}: `{path}`" for name, path in results.files.items()]
    lines += ["", "## Wall time per step", ""] + [f"- {k}: {v:.0f} s" for k, v in results.times.items()]
    lines.append(f"- load average (1/5/15 min) at start {results.load_start}, at end {results.load_end}, "
                 f"{os.cpu_count()} cores")
    text = "\n".join(lines) + "\n"
    with atomic_output_dir(out, REPORT_OUTPUT, overwrite) as tmp:
        (tmp / "report.md").write_text(text, encoding="utf-8")
        write_json(tmp / REPORT_NAME, provenance(
            kind="dupmae_ir.recipe_report", rows=[r.as_dict() for r in rows],
            dev_rows=[r.as_dict() for r in results.dev_rows], times=results.times,
            files={k: str(v) for k, v in results.files.items()}, stock_command=results.stock_command,
            comparisons=results.comparisons, grounding=results.grounding))
        if rows:
            plot(tmp / "plot.png", rows)
    return out


def comparisons_section(comparisons: list[dict]) -> list[str]:
    """The paired comparisons (:mod:`.comparisons`) as a Markdown section."""
    from .comparisons import table

    if not comparisons:
        return []
    return ["## Paired comparisons", "",
            "B against A on the per-query nDCG@10 of the same queries: the mean difference with its 95% t interval, "
            "the paired t-test and the paired randomisation test (10,000 random sign flips of the differences, "
            "seed 0; all 2^n when fewer), two-sided (scipy, `dupmae_ir.eval.significance`; any two runs: "
            "`python -m dupmae_ir.eval compare`).", "", *table(comparisons), ""]


def grounding_section(grounding: dict[str, dict], rows: list) -> list[str]:
    """Per model: its impact run alone beside BM25, and its grounded share."""
    from .rows import find

    if not grounding:
        return []
    bm25_row = find(rows, model="bm25")
    bm25 = bm25_row.ndcg if bm25_row else None
    lines = ["## The bag-of-words: grounded share", "",
             "How lexical each model's bag-of-words is: the share of a query's ten heaviest impact terms that are "
             "word pieces of the query's own text (the model's tokenizer), averaged over the queries; beside its "
             "impact run alone and BM25.", "",
             "| model | queries | grounded share (top 10) | impact nDCG@10 | BM25 nDCG@10 |", "|---|---|---|---|---|"]
    for model, g in grounding.items():
        impact_row = find(rows, model=g["model"], stages=tuple(g["stages"]), mode="impact")
        impact = impact_row.ndcg if impact_row else None
        lines.append(f"| {model} | {g['split']} ({g['queries']}) | {g['share']:.1%} | "
                     f"{'-' if impact is None else f'{impact:.4f}'} | {'-' if bm25 is None else f'{bm25:.4f}'} |")
    return lines + [""]


def plot(path: Path, rows: list) -> None:
    """Horizontal bars of nDCG@10, one per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    names = [r.label for r in rows][::-1]
    values = [r.ndcg for r in rows][::-1]
    colours = [{"pt": "C0", "nopt": "C1"}.get(r.model, "C7") for r in rows][::-1]
    ax.barh(names, values, color=colours)
    for y, v in enumerate(values):
        ax.text(v + 0.005, y, f"{v:.3f}", va="center", fontsize=7)
    ax.set_xlim(0, min(1.0, max(values) + 0.1))
    ax.set_xlabel("nDCG@10")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
