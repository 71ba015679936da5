"""The CPU recipe: DupMAE on SciFact end to end, through the product, with its baselines, in one table.

``python -m dupmae_ir.recipe`` (and ``bash run.sh demo``) runs, on the bundled SciFact:

1. BM25 (Pyserini, flat title+text index) on the test queries;
2. the zero-shot backbone with its native MEAN pooling (MiniLM-L6 is a sentence-transformers model);
3. their fusion: normalised linear interpolation (Pyserini's ``--normalization``, alpha = 1);
4. DupMAE pre-training of the backbone on the SciFact corpus (:mod:`dupmae_ir.train.pretraining`);
5. fine-tuning stage 1 (in-batch + BM25 negatives) and stage 2 (negatives mined by the stage-1 model)
   on SciFact train (:mod:`dupmae_ir.train.finetuning`), from the pre-trained model and, for the
   ablation, from the backbone without pre-training at the same stages, settings and seed (each arm's
   stage 2 mines with its own stage-1 model);
6. every fine-tuned model through the product: ``dupmae_ir.encode`` into a FAISS and a Lucene impact
   index (``indexes/<name>/<model>``), ``dupmae_ir.search`` in every mode (TREC runs under
   ``runs/<name>/``), scored with ir-measures: dense ([CLS]), impact (bag-of-words), hybrid (DupMAE's
   unweighted sum) and, as a measurement, a normalised fusion of the two;
7. the paired comparisons (:mod:`.comparisons`): each not-pre-trained row against its pre-trained
   equal, stage 2 against stage 1, the final model against BM25 and the fusion baseline, with paired
   t and randomisation tests over the queries; and each model's grounded share (how many of a query's
   ten heaviest impact terms are word pieces of its own text).

The exhaustive in-memory scoring (:class:`~dupmae_ir.search.exact.ExactSearcher`, floats) mines stage-2
negatives and is shown beside each model's index scores. The report (``eval/<name>/report.md``,
``report.json``, ``plot.png``) carries the table, the settings and what each was chosen on, the machine
and commit, and the stock ``pyserini.search.hybrid`` command that reproduces the final hybrid run.
``--quick``: stage 1 only (the ablation is kept). The command line is ``__main__``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

from ..outputs import OutputKind
from .config import RecipeConfig
from .report import stage_epochs, stock_pyserini_command

log = logging.getLogger(__name__)

RECIPE_MARKER = "dupmae_recipe.json"
RECIPE_OUTPUT = OutputKind("recipe working folder", RECIPE_MARKER, ("dupmae_ir.recipe",), legacy=("results.json",))


def ndcg_recall(run: dict[str, list[tuple[str, float]]], qrels: dict) -> dict[str, float]:
    """nDCG@10 and R@100 (ir-measures, :func:`dupmae_ir.runs.score_run`), rounded to 4 decimals."""
    from ..runs import score_run

    values = score_run(run, qrels, ("nDCG@10", "R@100")).values
    return {m: round(v, 4) for m, v in values.items()}


class Recipe:
    """One run of the recipe; :meth:`run` returns the results (rows, times, files)."""

    def __init__(self, cfg: RecipeConfig, progress: bool = True, overwrite: bool = False):
        self.cfg = cfg
        self.overwrite = overwrite
        self.out = Path(cfg.output)
        self.name = self.out.name
        self.index_root = Path(cfg.index_root) / self.name
        self.runs_root = Path(cfg.runs_root) / self.name
        self.report_dir = Path(cfg.report_root) / self.name
        self.progress = progress
        self.rows: list[dict] = []
        self.dev_rows: list[dict] = []
        # {"test"|"dev": {system: {qid: nDCG@10}}}: the paired comparisons' per-query values
        self.per_query: dict[str, dict[str, dict[str, float]]] = {"test": {}, "dev": {}}
        self.comparisons: list[dict] = []
        self.grounding: dict[str, dict] = {}  # model -> grounded share of its queries' top-10 impact terms
        self.times: dict[str, float] = {}
        self.files: dict[str, Path] = {}
        self.stock_command = ""

    # -- helpers --------------------------------------------------------------------------------
    def timed(self, name: str):
        recipe = self

        class _T:
            def __enter__(self):
                self.t = time.time()
                print(f"[recipe] {name} ...", flush=True)

            def __exit__(self, *exc):
                recipe.times[name] = round(time.time() - self.t, 1)
                print(f"[recipe] {name}: {recipe.times[name]:.0f}s", flush=True)

        return _T()

    def add(self, system: str, run, note: str = "", source: str = "", dev: bool = False) -> dict:
        from ..runs import per_query

        qrels, queries = (self.dev_qrels, self.dev_queries) if dev else (self.qrels, self.queries)
        metrics = ndcg_recall(run, qrels)
        self.per_query["dev" if dev else "test"][system] = per_query(run, qrels, "nDCG@10", list(queries))
        row = {"system": system, **metrics, "source": source, "note": note}
        (self.dev_rows if dev else self.rows).append(row)
        print(f"[recipe]   {'dev ' if dev else ''}{system:<52} nDCG@10 {metrics['nDCG@10']:.4f}  "
              f"R@100 {metrics['R@100']:.4f}", flush=True)
        return row

    # -- steps ----------------------------------------------------------------------------------
    def run(self) -> dict:
        import torch

        from ..data import doc_text, resolve
        from ..data.splits import dev_split
        from ..precision import default_device, resolve_dtype, training_precision

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        t_all = time.time()
        self.load_start = os.getloadavg()
        self.precision = training_precision(cfg.precision)
        self.eval_dtype = resolve_dtype(cfg.eval_precision, str(default_device()))  # what encode --dtype resolves
        self.eval_precision = self.eval_dtype
        print(f"[recipe] training precision: {self.precision} ({cfg.precision}); evaluation precision: "
              f"{self.eval_precision} ({cfg.eval_precision}); fine-tuning dropout: "
              f"{'the backbone' + chr(39) + 's' if cfg.dropout is None else cfg.dropout}", flush=True)
        self.coll = coll = resolve(cfg.corpus)
        self.claim_outputs()
        if cfg.test:
            self.queries, self.qrels = coll.queries(cfg.test_split), coll.qrels(cfg.test_split)
        else:
            self.queries, self.qrels = {}, {}
            if not cfg.holdout_fraction:
                raise ValueError("a selection run (test=False) needs holdout_fraction > 0: it reports the dev split")
        self.dev_queries, self.dev_qrels = (dev_split(coll, cfg.train_split, cfg.holdout_fraction, cfg.holdout_seed)
                                            if cfg.holdout_fraction else ({}, {}))
        self.docs = {d.id: doc_text(d) for d in coll.iter_docs()}

        with self.timed("bm25"):
            from ..bm25 import bm25_search, build_bm25_index

            index = build_bm25_index(coll, self.out / "bm25-index", progress=self.progress)
            if cfg.test:
                bm25 = bm25_search(index, self.queries, hits=1000, progress=self.progress)
                self.write_run("bm25", bm25, dict(system="bm25", index=str(index)))
                self.add("BM25 (Pyserini, flat)", bm25, source="Lucene")
        if cfg.test:
            with self.timed("zero-shot backbone (mean pooling)"):
                zs = self.exact(cfg.backbone, pooling="mean").search(self.queries, k=1000, modes=("dense",))["dense"]
            self.add("backbone zero-shot, mean pooling (dense)", zs, source="in memory")

            from ..runs import fuse

            fused = {q: fuse(zs[q], bm25[q], 1000, "normalized", 1.0) for q in self.queries}
            self.add("BM25 + backbone(mean), normalised fusion", fused, source="fusion",
                     note="the strongest simple baseline")

        if cfg.stage1:
            self.finetune_chain("DupMAE pre-trained", cfg.stage1, tuple(s for s in cfg.stages if s > 1))
        else:
            with self.timed("dupmae pre-training"):
                pretrained = Path(cfg.pretrained) if cfg.pretrained else self.pretrain()
            self.finetune_chain("DupMAE pre-trained", str(pretrained), cfg.stages)
        if cfg.ablation:
            self.finetune_chain("no pre-training", cfg.backbone, cfg.stages)

        self.times["total"] = round(time.time() - t_all, 1)
        self.load_end = os.getloadavg()
        return self.report()

    def exact(self, model_path: str, pooling: str = "cls", need_sparse: bool | None = None):
        from ..modeling.model import DupMAEModel
        from ..search.exact import ExactSearcher

        model, tok = DupMAEModel.from_pretrained(model_path)
        sparse = pooling == "cls" if need_sparse is None else need_sparse
        r = ExactSearcher(model, tok, doc_max_length=self.cfg.eval_doc_max_length,
                          query_max_length=self.cfg.query_max_length, need_sparse=sparse, pooling=pooling,
                          dtype=self.eval_dtype)
        return r.index(list(self.docs), list(self.docs.values()), progress=self.progress)

    def pretrain(self) -> Path:
        from ..train.arguments import PretrainArguments
        from ..train.pretraining import run_pretraining

        cfg = self.cfg
        out = self.out / "pretrained"
        args = PretrainArguments(model_name_or_path=cfg.backbone, corpus=cfg.pretrain_corpus or cfg.corpus,
                                 max_seq_length=cfg.pretrain_max_seq_length, output_dir=str(out),
                                 max_steps=cfg.pretrain_steps, batch_size=cfg.pretrain_batch_size,
                                 learning_rate=cfg.pretrain_lr, head_learning_rate=cfg.head_learning_rate,
                                 precision=self.precision, seed=cfg.seed, save_steps=10 ** 9,
                                 logging_steps=10, overwrite_output_dir=True, disable_tqdm=not self.progress)
        return run_pretraining(args)

    def finetune_chain(self, label: str, start: str, stages: tuple[int, ...]) -> None:
        """Stages 1 (BM25 negatives) and 2 (negatives mined by the stage-1 model) from ``start``; each
        stage's model goes through the product (index, search, runs) and is scored in memory too."""
        from ..modeling.model import RepresentationConfig
        from ..train.arguments import FinetuneArguments
        from ..train.finetuning import run_finetuning

        cfg = self.cfg
        tag = "pt" if label.startswith("DupMAE") else "nopt"
        model_path = start
        if stages and stages[0] > 1:  # started from a stage-1 checkpoint: its own negatives first
            with self.timed(f"{label}: mining (stage {stages[0]})"):
                self.mine(tag, stages[0], self.exact(model_path))
        for stage in stages:
            out = self.out / f"{tag}-stage{stage}"
            if stage == 1:
                extra = {"bm25_index": str(self.out / "bm25-index"), "sparse_calibration": cfg.sparse_calibration,
                         "sparse_scale_calibration": cfg.sparse_scale_calibration}
            else:
                extra = {"negatives": str(self.out / f"{tag}-stage{stage}-negatives.tsv")}
            args = FinetuneArguments(
                model_name_or_path=model_path, stage=stage, train=cfg.corpus, split=cfg.train_split,
                output_dir=str(out), group_size=cfg.group_size, temperature=cfg.temperature,
                sparse_weight=cfg.sparse_weight, part_loss_weight=cfg.part_loss_weight,
                flops_query=cfg.flops_query, flops_doc=cfg.flops_doc,
                query_max_length=cfg.query_max_length, doc_max_length=cfg.doc_max_length, batch_size=cfg.batch_size,
                num_train_epochs=stage_epochs(cfg, stage),
                precision=self.precision, dropout=cfg.dropout,
                learning_rate=cfg.learning_rate, head_learning_rate=cfg.head_learning_rate,
                mine_depth=cfg.mine_depth, mine_skip=cfg.mine_skip, holdout_fraction=cfg.holdout_fraction,
                holdout_seed=cfg.holdout_seed, seed=cfg.seed, overwrite_output_dir=True, save_steps=10 ** 9,
                disable_tqdm=not self.progress, **extra)
            with self.timed(f"{label}: fine-tune stage {stage}"):
                model_path = str(run_finetuning(args))
            config = RepresentationConfig.load(model_path)
            if cfg.query_topk is not None or cfg.query_min_weight:  # query pruning, recorded in the checkpoint
                config = replace(config, query_topk=cfg.query_topk or config.query_topk,
                                 query_min_weight=cfg.query_min_weight)
                config.save(model_path)
            if config.finetuning.get("sparse_scale_calibration") is not None:
                print(f"[recipe]   sparse scale calibration: x{config.finetuning['sparse_scale_calibration']:.4g}",
                      flush=True)
            name = f"{label} + stage {'+'.join(str(s) for s in stages[:stages.index(stage) + 1])}"
            with self.timed(f"{label}: in-memory scoring and mining (stage {stage})"):
                retriever = self.exact(model_path)
                memory = retriever.search(self.queries, k=1000) if cfg.test else None
                if self.dev_queries:
                    self.add(f"{name}: hybrid (sum)", retriever.search(self.dev_queries, k=1000, modes=("hybrid",))
                             ["hybrid"], dev=True)
                if stage + 1 in stages:  # stage-2 negatives from this model's own retrieval
                    self.mine(tag, stage + 1, retriever)
                self.ground(name, retriever)
                del retriever
            if cfg.test:
                with self.timed(f"{label}: encode + index + search (stage {stage})"):
                    runs = self.product(f"{tag}-stage{stage}", model_path, final=(tag == "pt" and stage == stages[-1]))
                self.add_model_rows(name, runs, memory)

    def ground(self, name: str, retriever) -> None:
        """The grounded share of the model's test (else dev) queries: their top-10 impact terms that are
        word pieces of their own text (:meth:`~dupmae_ir.inference.DupMAEEncoder.grounded_shares`)."""
        split, queries = ("test", self.queries) if self.cfg.test else ("dev", self.dev_queries)
        shares = [s for s in retriever.encoder.grounded_shares(list(queries.values())) if s is not None]
        if shares:
            self.grounding[name] = {"split": split, "share": round(sum(shares) / len(shares), 4),
                                    "queries": len(shares), "terms": 10}

    def mine(self, tag: str, stage: int, retriever) -> None:
        """Negatives of ``stage`` from ``retriever``'s hybrid top ``mine_depth`` (after ``mine_skip``)."""
        from ..data.training import write_negatives
        from ..train.mining import mining_depth, negatives_from_run

        cfg = self.cfg
        train_q, train_qrels = self.coll.queries(cfg.train_split), self.coll.qrels(cfg.train_split)
        mined = retriever.search(train_q, k=mining_depth(cfg.mine_depth, cfg.mine_skip), modes=("hybrid",))["hybrid"]
        negs = negatives_from_run(mined, train_qrels, cfg.mine_depth + cfg.mine_skip, cfg.mine_skip)
        write_negatives(self.out / f"{tag}-stage{stage}-negatives.tsv", negs)

    def add_model_rows(self, name: str, runs: dict, memory: dict) -> None:
        from ..runs import fuse

        for mode, note in (("dense", ""), ("impact", ""), ("hybrid", "DupMAE score: unweighted sum")):
            mem = ndcg_recall(memory[mode], self.qrels)["nDCG@10"]
            row = self.add(f"{name}: {mode}" + (" (sum)" if mode == "hybrid" else ""), runs[mode], source="index")
            row["note"] = "; ".join(x for x in (note, f"in memory {mem:.4f} ({row['nDCG@10'] - mem:+.4f})") if x)
        norm = {q: fuse(runs["dense"][q], runs["impact"][q], 1000, "normalized", 1.0) for q in self.queries}
        self.add(f"{name}: hybrid (normalised fusion)", norm, source="index", note="measurement, not the method's")

    def product(self, model: str, model_path: str, final: bool = False) -> dict:
        """``model_path`` through the product: FAISS + Lucene indexes, ``DupMAESearcher`` in every mode,
        TREC runs; for the final model also pre-encoded topics and the stock Pyserini command."""
        from ..encode import encode_corpus, encode_queries
        from ..runs import MODES
        from ..search import DupMAESearcher

        cfg = self.cfg
        index = encode_corpus(self.coll, self.index_root / model, encoder=model_path, dtype=self.eval_precision,
                              doc_max_length=cfg.eval_doc_max_length, progress=self.progress, overwrite=self.overwrite)
        searcher = DupMAESearcher(index, threads=cfg.threads or 2, query_max_length=cfg.query_max_length)
        runs = searcher.search_all(self.queries, MODES, hits=1000, batch_size=64, progress=self.progress)
        for mode, run in runs.items():
            self.write_run(f"{model}.{mode}", run, dict(system=f"{model} {mode}", index=str(index), mode=mode))
        self.files[f"index {model}"] = index
        if final:
            queries = encode_queries(self.queries, searcher.encoder, index / "queries", overwrite=True)
            self.files["pre-encoded topics"] = queries
            self.stock_command = stock_pyserini_command(index, queries, searcher.alpha,
                                                        self.runs_root / f"{model}.hybrid.pyserini.trec")
        return runs

    def write_run(self, name: str, run: dict, info: dict) -> None:
        from ..runs import write_trec

        path = write_trec(self.runs_root / f"{name}.trec", run, f"dupmae-recipe-{name}",
                          dict(info, recipe=self.name), overwrite=self.overwrite)
        self.files[f"run {name}"] = path

    def claim_outputs(self) -> None:
        """Every output is checked before any work: the working folder (new, empty or an earlier recipe's,
        then only with ``overwrite``), the indexes, runs and report folders; a marker written at once makes
        even an interrupted run's working folder recognisable as the recipe's."""
        from ..index import INDEX_OUTPUT
        from ..outputs import check_output_dir, check_output_file
        from ..provenance import provenance, write_json
        from ..runs import is_run_file
        from .report import REPORT_OUTPUT

        check_output_dir(self.out, RECIPE_OUTPUT, self.overwrite)
        check_output_dir(self.report_dir, REPORT_OUTPUT, self.overwrite)
        products = (("pt", self.cfg.stages), ("nopt", self.cfg.stages if self.cfg.ablation else ()))
        for tag, stages in products if self.cfg.test else ():
            for stage in stages:
                check_output_dir(self.index_root / f"{tag}-stage{stage}", INDEX_OUTPUT, self.overwrite)
                for mode in ("dense", "impact", "hybrid"):
                    check_output_file(self.runs_root / f"{tag}-stage{stage}.{mode}.trec", is_run_file, self.overwrite)
        if self.cfg.test:
            check_output_file(self.runs_root / "bm25.trec", is_run_file, self.overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / RECIPE_MARKER, provenance(kind="dupmae_ir.recipe", config=asdict(self.cfg)))

    def report(self) -> dict:
        from ..provenance import provenance, write_json
        from .comparisons import compare_rows
        from .report import write

        self.comparisons = (compare_rows(self.rows, self.per_query["test"], "test")
                            + compare_rows(self.dev_rows, self.per_query["dev"], "dev"))
        final = [r for r in self.rows if r["system"].startswith("DupMAE") and r["system"].endswith("hybrid (sum)")]
        best = final[-1]["nDCG@10"] if final else None
        report = write(self.report_dir, self, self.overwrite)
        self.files["report"] = report / "report.md"
        result = {"rows": self.rows, "dev_rows": self.dev_rows, "times": self.times, "config": asdict(self.cfg),
                  "final_hybrid": best, "training_precision": self.precision, "eval_precision": self.eval_precision,
                  "load_average": {"start": self.load_start, "end": self.load_end},
                  "files": {k: str(v) for k, v in self.files.items()}, "stock_command": self.stock_command,
                  "comparisons": self.comparisons, "grounding": self.grounding,
                  "per_query": {split: {system: {q: round(v, 6) for q, v in values.items()}
                                        for system, values in systems.items()}
                                for split, systems in self.per_query.items()}}
        write_json(self.out / "results.json", provenance(kind="dupmae_ir.recipe", **result))
        print("\n" + (report / "report.md").read_text(), flush=True)
        return result
