"""One run of the recipe: its outputs claimed before any work, the steps (:mod:`.steps`) in order on one
:class:`~.state.Context`, then the comparisons, the report and ``results.json``."""
from __future__ import annotations

import os
import time

from ..outputs import OutputKind
from .config import RecipeConfig
from .rows import ARMS, final_hybrid
from .state import Context, Inputs, Results, precisions

RECIPE_MARKER = "dupmae_recipe.json"
RECIPE_OUTPUT = OutputKind("recipe working folder", RECIPE_MARKER, ("dupmae_ir.recipe",), legacy=("results.json",))


class Recipe:
    """One run of the recipe; :meth:`run` returns the results (rows, times, files) as ``results.json``
    holds them, and leaves the typed ones in :attr:`results`."""

    def __init__(self, cfg: RecipeConfig, progress: bool = True, overwrite: bool = False):
        self.cfg = cfg
        self.paths = cfg.layout.paths()
        self.progress = progress
        self.overwrite = overwrite
        self.results = Results()

    def run(self) -> dict:
        import torch

        from ..data import resolve
        from .steps import baselines, finetune_arm, pretrain

        cfg, results = self.cfg, self.results
        if cfg.eval.threads:
            torch.set_num_threads(cfg.eval.threads)
        t_all = time.time()
        results.load_start = os.getloadavg()
        resolved = precisions(cfg)
        dropout = cfg.finetune.dropout
        print(f"[recipe] training precision: {resolved[0]} ({cfg.training.precision}); evaluation precision: "
              f"{resolved[1]} ({cfg.eval.eval_precision}); fine-tuning dropout: "
              f"{'the backbone' + chr(39) + 's' if dropout is None else dropout}", flush=True)
        coll = resolve(cfg.data.corpus)
        self.claim_outputs()
        ctx = Context(cfg, self.paths, Inputs.load(cfg, coll, resolved), results, self.progress, self.overwrite)

        baselines(ctx)
        plan = cfg.plan
        if plan.stage1:
            finetune_arm(ctx, "pt", plan.stage1, tuple(s for s in plan.stages if s > 1))
        else:
            with ctx.timed("dupmae pre-training"):
                pretrained = plan.pretrained or pretrain(ctx)
            finetune_arm(ctx, "pt", str(pretrained), plan.stages)
        if plan.ablation:
            finetune_arm(ctx, "nopt", cfg.data.backbone, plan.stages)

        results.times["total"] = round(time.time() - t_all, 1)
        results.load_end = os.getloadavg()
        return self.report(ctx)

    def claim_outputs(self) -> None:
        """Every output is checked before any work: the working folder (new, empty or an earlier recipe's,
        then only with ``overwrite``), the indexes, runs and report folders; a marker written at once makes
        even an interrupted run's working folder recognisable as the recipe's."""
        from ..index import INDEX_OUTPUT
        from ..outputs import check_output_dir, check_output_file
        from ..provenance import provenance, write_json
        from ..runs import is_run_file
        from .report import REPORT_OUTPUT

        paths, plan = self.paths, self.cfg.plan
        check_output_dir(paths.out, RECIPE_OUTPUT, self.overwrite)
        check_output_dir(paths.report_dir, REPORT_OUTPUT, self.overwrite)
        if self.cfg.data.test:
            for arm in ARMS if plan.ablation else ("pt",):
                for stage in plan.stages:
                    check_output_dir(paths.index_root / f"{arm}-stage{stage}", INDEX_OUTPUT, self.overwrite)
                    for mode in ("dense", "impact", "hybrid"):
                        check_output_file(paths.runs_root / f"{arm}-stage{stage}.{mode}.trec", is_run_file,
                                          self.overwrite)
            check_output_file(paths.runs_root / "bm25.trec", is_run_file, self.overwrite)
        paths.out.mkdir(parents=True, exist_ok=True)
        write_json(paths.out / RECIPE_MARKER, provenance(kind="dupmae_ir.recipe", config=self.cfg.flat()))

    def report(self, ctx: Context) -> dict:
        """The comparisons, the report (:func:`.report.write`) and ``results.json``; returns its content."""
        from ..provenance import provenance, write_json
        from .comparisons import compare_rows
        from .report import write

        results = self.results
        results.comparisons = compare_rows(results.rows, "test") + compare_rows(results.dev_rows, "dev")
        final = final_hybrid(results.rows)
        report = write(self.paths.report_dir, ctx, self.overwrite)
        results.files["report"] = report / "report.md"
        result = {"rows": [r.as_dict() for r in results.rows], "dev_rows": [r.as_dict() for r in results.dev_rows],
                  "times": results.times, "config": self.cfg.flat(),
                  "final_hybrid": final.ndcg if final else None,
                  "training_precision": ctx.inputs.training_precision, "eval_precision": ctx.inputs.eval_precision,
                  "load_average": {"start": results.load_start, "end": results.load_end},
                  "files": {k: str(v) for k, v in results.files.items()}, "stock_command": results.stock_command,
                  "comparisons": results.comparisons, "grounding": results.grounding,
                  "per_query": {split: {r.label: {q: round(v, 6) for q, v in r.per_query.items()} for r in rows}
                                for split, rows in (("test", results.rows), ("dev", results.dev_rows))}}
        write_json(self.paths.out / "results.json", provenance(kind="dupmae_ir.recipe", **result))
        print("\n" + (report / "report.md").read_text(), flush=True)
        return result
