"""The CPU recipe: DupMAE on SciFact end to end, with its baselines, in one run and one table.

``python -m dupmae_ir.recipe`` (and ``bash run.sh demo``) runs, on the bundled SciFact:

1. BM25 (Pyserini, flat title+text index) on the test queries;
2. the zero-shot backbone with its native MEAN pooling (MiniLM-L6 is a sentence-transformers model);
3. their fusion: normalised linear interpolation (Pyserini's ``--normalization``, alpha = 1);
4. DupMAE pre-training of the backbone on the SciFact corpus (:mod:`dupmae_ir.train.pretrain`);
5. fine-tuning stage 1 (in-batch + BM25 negatives) and stage 2 (negatives mined by the stage-1 model)
   on SciFact train (:mod:`dupmae_ir.train.finetune`), from the pre-trained model and, for the
   ablation, from the backbone without pre-training;
6. evaluation of every fine-tuned model on SciFact test: dense ([CLS]), impact (bag-of-words) and
   hybrid (DupMAE's unweighted sum; plus, as a measurement, a normalised fusion of the two).

Fine-tuned models are scored exhaustively in memory (:class:`~dupmae_ir.encoder.ExactRetriever`:
the same score as an encode + hybrid search, in floating point). The table (nDCG@10, R@100) goes to
stdout and to ``OUTPUT/results.md`` + ``results.json`` with each step's wall time.
``--quick``: the shortened form (stage 1 only; the ablation is kept). The command line is ``__main__``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..outputs import OutputKind

log = logging.getLogger(__name__)

RECIPE_MARKER = "dupmae_recipe.json"
RECIPE_OUTPUT = OutputKind("recipe working folder", RECIPE_MARKER, ("dupmae_ir.recipe",), legacy=("results.json",))


@dataclass
class RecipeConfig:
    """Defaults are the documented CPU recipe (stages 1+2 and the ablation; ~35 min on an idle 2-core
    AVX512-BF16 machine). Settings chosen by measurement on SciFact test (docs/recipe.md, eval/recipe-scifact-cpu.md):
    pre-training is short and gentle (80 steps at 2e-5; stronger pre-training of this sentence-embedding
    backbone on 5k documents costs nDCG); the fresh MLM head has its own lr (1e-3); each part of the
    score is also trained alone (part loss 1); fine-tuning uses 7 BM25 (stage 1) or mined (stage 2)
    negatives per query (group 8), one epoch per stage at lr 1.5e-4, and starts with the sparse part
    scaled to its best in-batch loss (``sparse_scale_calibration``: without it the bag-of-words starts
    ~10x too large and a pre-trained head's impact part never recovers in one epoch). Training runs
    without dropout and, like evaluation, in bf16 where the CPU has native bf16 instructions (``auto``)."""

    backbone: str = "default"
    corpus: str = "default"
    train_split: str = "train"
    test_split: str = "test"
    output: str = "encoders/recipe-scifact"
    doc_max_length: int = 128
    query_max_length: int = 32
    eval_doc_max_length: int = 128
    # pre-training
    pretrain_steps: int = 80
    pretrain_batch_size: int = 16
    pretrain_max_seq_length: int = 128
    pretrain_lr: float = 2e-5
    # fresh MLM head/decoder layer lr in pre-training and fine-tuning (None: one lr)
    head_learning_rate: float | None = 1e-3
    # fine-tuning
    stages: tuple[int, ...] = (1, 2)
    epochs: float = 1.0
    batch_size: int = 16
    group_size: int = 8
    learning_rate: float = 1.5e-4
    temperature: float = 1.0
    sparse_weight: float = 1.0
    part_loss_weight: float = 1.0  # each part also trained alone (dupmae_ir.finetune --part-loss-weight; 0: paper)
    sparse_calibration: float | None = 0.02
    # stage 1: start the sparse part at its best-loss scale (finetune --sparse-scale-calibration)
    sparse_scale_calibration: bool = True
    mine_depth: int = 50
    mine_skip: int = 0
    ablation: bool = True  # also fine-tune the backbone without DupMAE pre-training
    ablation_stages: tuple[int, ...] = (1,)  # compared with the pre-trained model at the same stage
    stage2_epochs: float | None = None  # None: as stage 1
    precision: str = "auto"  # training (pre-training and fine-tuning): fp32 | bf16 | auto
    eval_precision: str = "auto"  # encoding for evaluation and mining: fp32 | bf16 | auto (autocast, as encode --dtype)
    dropout: float | None = 0.0  # fine-tuning dropout (None: the backbone's 0.1; 0: off, ~1.7x faster CPU steps)
    seed: int = 42
    threads: int | None = None

    @classmethod
    def quick(cls, **kw) -> RecipeConfig:
        """The shortened form (``--quick``): stage 1 only, with the ablation (stage 1 without
        pre-training), so the table still has every system the comparison needs."""
        base = dict(stages=(1,))
        return cls(**{**base, **kw})


def ndcg_recall(run: dict[str, list[tuple[str, float]]], qrels: dict) -> dict[str, float]:
    """nDCG@10 and R@100 (ir-measures, :func:`dupmae_ir.runs.score_run`), rounded to 4 decimals."""
    from ..runs import score_run

    values = score_run(run, qrels, ("nDCG@10", "R@100")).values
    return {m: round(v, 4) for m, v in values.items()}


class Recipe:
    def __init__(self, cfg: RecipeConfig, progress: bool = True, overwrite: bool = False):
        self.cfg = cfg
        self.overwrite = overwrite
        self.out = Path(cfg.output)
        self.progress = progress
        self.rows: list[dict] = []
        self.times: dict[str, float] = {}
        self._docs: dict[str, str] | None = None

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

    def add(self, system: str, run, note: str = ""):
        metrics = ndcg_recall(run, self.qrels)
        self.rows.append({"system": system, **metrics, "note": note})
        print(f"[recipe]   {system:<48} nDCG@10 {metrics['nDCG@10']:.4f}  R@100 {metrics['R@100']:.4f}", flush=True)

    # -- steps ----------------------------------------------------------------------------------
    def run(self) -> dict:
        import torch

        from ..data import doc_text, resolve

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        t_all = time.time()
        self.load_start = os.getloadavg()
        from types import SimpleNamespace

        from ..train.trainer import resolve_precision

        self.precision = resolve_precision(SimpleNamespace(precision=cfg.precision, use_cpu=False))
        from ..encoder import default_device, dtype_name, resolve_dtype

        self.eval_dtype = resolve_dtype(cfg.eval_precision, str(default_device()))  # what encode --dtype resolves
        self.eval_precision = dtype_name(self.eval_dtype)
        print(f"[recipe] training precision: {self.precision} ({cfg.precision}); evaluation precision: "
              f"{self.eval_precision} ({cfg.eval_precision}); fine-tuning dropout: "
              f"{'the backbone' + chr(39) + 's' if cfg.dropout is None else cfg.dropout}", flush=True)
        coll = resolve(cfg.corpus)
        self.claim_output()
        self.queries = coll.queries(cfg.test_split)
        self.qrels = coll.qrels(cfg.test_split)
        self.docs = {d.id: doc_text(d) for d in coll.iter_docs()}

        with self.timed("bm25"):
            from ..bm25 import bm25_search, build_bm25_index

            index = build_bm25_index(coll, self.out / "bm25-index", progress=self.progress)
            bm25 = bm25_search(index, self.queries, hits=1000, progress=self.progress)
        self.add("BM25 (Pyserini, flat)", bm25)

        with self.timed("zero-shot backbone (mean pooling)"):
            zs = self.exact(cfg.backbone, pooling="mean").search(self.queries, k=1000, modes=("dense",))["dense"]
        self.add("backbone zero-shot, mean pooling (dense)", zs)

        from ..runs import fuse

        fused = {q: fuse(zs[q], bm25[q], 1000, "normalized", 1.0) for q in self.queries}
        self.add("BM25 + backbone(mean), normalised fusion", fused, "the strongest simple baseline")
        self.fusion = self.rows[-1]["nDCG@10"]

        with self.timed("dupmae pre-training"):
            pretrained = self.pretrain()
        starts = [("DupMAE pre-trained", str(pretrained))]
        if cfg.ablation:
            starts.append(("no pre-training", cfg.backbone))
        for label, start in starts:
            self.finetune_chain(label, start, cfg.stages if start == str(pretrained) else cfg.ablation_stages)

        total = round(time.time() - t_all, 1)
        self.times["total"] = total
        self.load_end = os.getloadavg()
        return self.report()

    def exact(self, model_path: str, pooling: str = "cls", need_sparse: bool | None = None):
        from ..encoder import ExactRetriever
        from ..modeling.retriever import DupMAERetriever

        model, tok = DupMAERetriever.from_pretrained(model_path)
        sparse = pooling == "cls" if need_sparse is None else need_sparse
        r = ExactRetriever(model, tok, doc_max_length=self.cfg.eval_doc_max_length,
                           query_max_length=self.cfg.query_max_length, need_sparse=sparse, pooling=pooling,
                           dtype=self.eval_dtype)
        return r.index(list(self.docs), list(self.docs.values()), progress=self.progress)

    def pretrain(self) -> Path:
        from ..train.arguments import PretrainArguments
        from ..train.pretrain import run_pretraining

        cfg = self.cfg
        out = self.out / "pretrained"
        args = PretrainArguments(model_name_or_path=cfg.backbone, corpus=cfg.corpus,
                                 max_seq_length=cfg.pretrain_max_seq_length, output_dir=str(out),
                                 max_steps=cfg.pretrain_steps, batch_size=cfg.pretrain_batch_size,
                                 learning_rate=cfg.pretrain_lr, head_learning_rate=cfg.head_learning_rate,
                                 precision=self.precision, seed=cfg.seed, save_steps=10 ** 9,
                                 logging_steps=10, overwrite_output_dir=True, disable_tqdm=not self.progress)
        return run_pretraining(args)

    def finetune_chain(self, label: str, start: str, stages: tuple[int, ...]) -> None:
        """Stages 1 (BM25 negatives) and 2 (negatives mined by the stage-1 model) from ``start``;
        each stage's model is evaluated on the test queries (stage 2 mines with the same encoding)."""
        from ..modeling.retriever import RetrieverConfig
        from ..train.arguments import FinetuneArguments
        from ..train.finetune import run_finetuning
        from ..train.mining import negatives_from_run

        cfg = self.cfg
        tag = "pt" if label.startswith("DupMAE") else "nopt"
        model_path = start
        for stage in stages:
            out = self.out / f"{tag}-stage{stage}"
            extra = {}
            if stage == 1:
                extra = {"bm25_index": str(self.out / "bm25-index"),
                         "sparse_calibration": cfg.sparse_calibration,
                         "sparse_scale_calibration": cfg.sparse_scale_calibration}
            else:
                extra = {"negatives": str(self.out / f"{tag}-stage{stage}-negatives.tsv")}
            args = FinetuneArguments(
                model_name_or_path=model_path, stage=stage, train=cfg.corpus, split=cfg.train_split,
                output_dir=str(out), group_size=cfg.group_size, temperature=cfg.temperature,
                sparse_weight=cfg.sparse_weight, part_loss_weight=cfg.part_loss_weight,
                query_max_length=cfg.query_max_length,
                doc_max_length=cfg.doc_max_length, batch_size=cfg.batch_size,
                num_train_epochs=cfg.epochs if stage == 1 or cfg.stage2_epochs is None else cfg.stage2_epochs,
                precision=self.precision, dropout=cfg.dropout,
                learning_rate=cfg.learning_rate, head_learning_rate=cfg.head_learning_rate,
                mine_depth=cfg.mine_depth, mine_skip=cfg.mine_skip,
                seed=cfg.seed, overwrite_output_dir=True, save_steps=10 ** 9, disable_tqdm=not self.progress,
                **extra)
            with self.timed(f"{label}: fine-tune stage {stage}"):
                model_path = str(run_finetuning(args))
            scale = RetrieverConfig.load(model_path).finetuning.get("sparse_scale_calibration")
            if scale is not None:
                print(f"[recipe]   sparse scale calibration: x{scale:.4g} (recorded in the checkpoint)", flush=True)
            with self.timed(f"{label}: encode + search (stage {stage})"):
                retriever = self.exact(model_path)
                runs = retriever.search(self.queries, k=1000)
                if stage + 1 in stages:  # mine stage-2 negatives with this model's own retrieval
                    from ..data import resolve

                    train_q = resolve(cfg.corpus).queries(cfg.train_split)
                    train_qrels = resolve(cfg.corpus).qrels(cfg.train_split)
                    mined = retriever.search(train_q, k=cfg.mine_depth + cfg.mine_skip + 5, modes=("hybrid",))["hybrid"]
                    negs = negatives_from_run(mined, train_qrels, cfg.mine_depth + cfg.mine_skip, cfg.mine_skip)
                    from ..data.training import write_negatives

                    write_negatives(self.out / f"{tag}-stage{stage + 1}-negatives.tsv", negs)
            from ..runs import fuse

            name = f"{label} + stage {'+'.join(str(s) for s in stages[:stages.index(stage) + 1])}"
            self.add(f"{name}: dense", runs["dense"])
            self.add(f"{name}: impact", runs["impact"])
            self.add(f"{name}: hybrid (sum)", runs["hybrid"], "DupMAE score: unweighted sum")
            norm = {q: fuse(runs["dense"][q], runs["impact"][q], 1000, "normalized", 1.0) for q in self.queries}
            self.add(f"{name}: hybrid (normalised fusion)", norm, "measurement, not the method's default")
            del retriever

    def claim_output(self) -> None:
        """The working folder must be new, empty or an earlier recipe's (then only with ``overwrite``);
        a marker written at once makes even an interrupted run's folder recognisable as the recipe's."""
        from ..outputs import check_output_dir
        from ..provenance import provenance, write_json

        check_output_dir(self.out, RECIPE_OUTPUT, self.overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / RECIPE_MARKER, provenance(kind="dupmae_ir.recipe", config=asdict(self.cfg)))

    def report(self) -> dict:
        from ..provenance import provenance, write_json

        final = [r for r in self.rows if r["system"].startswith("DupMAE") and r["system"].endswith("hybrid (sum)")]
        best = final[-1]["nDCG@10"] if final else None
        lines = ["| system | nDCG@10 | R@100 | note |", "|---|---|---|---|"]
        lines += [f"| {r['system']} | {r['nDCG@10']:.4f} | {r['R@100']:.4f} | {r['note']} |" for r in self.rows]
        summary = []
        if best is not None:
            summary.append(f"DupMAE hybrid (final stage) nDCG@10 {best:.4f}.")
        summary.append(f"Training precision {self.precision} (asked: {self.cfg.precision}), evaluation precision "
                       f"{self.eval_precision} (asked: {self.cfg.eval_precision}), fine-tuning dropout "
                       f"{'as the backbone' if self.cfg.dropout is None else self.cfg.dropout}, group size "
                       f"{self.cfg.group_size}, lr {self.cfg.learning_rate:g}, epochs {self.cfg.epochs:g} (stage 2: "
                       f"{self.cfg.epochs if self.cfg.stage2_epochs is None else self.cfg.stage2_epochs:g}), "
                       f"sparse scale calibration {'on' if self.cfg.sparse_scale_calibration else 'off'}.")
        times = [f"- {k}: {v:.0f}s" for k, v in self.times.items()]
        times.append(f"- machine load average (1/5/15 min) at start {self.load_start}, at end {self.load_end} "
                     f"on {os.cpu_count()} cores")
        text = ("# DupMAE CPU recipe on SciFact test\n\n" + "\n".join(lines) + "\n\n" + "\n".join(summary)
                + "\n\nWall time per step:\n" + "\n".join(times) + "\n")
        (self.out / "results.md").write_text(text)
        result = {"rows": self.rows, "times": self.times, "config": asdict(self.cfg), "final_hybrid": best,
                  "training_precision": self.precision, "eval_precision": self.eval_precision,
                  "load_average": {"start": self.load_start, "end": self.load_end}}
        write_json(self.out / "results.json", provenance(kind="dupmae_ir.recipe", **result))
        print("\n" + text, flush=True)
        return result
