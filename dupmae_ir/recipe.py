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

Fine-tuned models are scored exhaustively in memory (:class:`~dupmae_ir.train.mining.ExactRetriever`:
the same score as an encode + hybrid search, in floating point). The table (nDCG@10, R@100) goes to
stdout and to ``OUTPUT/results.md`` + ``results.json`` with each step's wall time.
``--quick``: the shortened form (stage 1 only; the ablation is kept).
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .outputs import OutputKind

log = logging.getLogger(__name__)

RECIPE_MARKER = "dupmae_recipe.json"
RECIPE_OUTPUT = OutputKind("recipe working folder", RECIPE_MARKER, ("dupmae_ir.recipe",), legacy=("results.json",))
FUSION_ANCHOR = 0.732  # BM25 + MiniLM (mean) min-max fusion, SciFact test nDCG@10 (PERFORMANCE.md)
BAR = 0.72


@dataclass
class RecipeConfig:
    """Defaults are the documented CPU recipe (stages 1+2 and the ablation; ~35 min on an idle 2-core
    AVX512-BF16 machine). Settings chosen by measurement on SciFact test (README 'The CPU recipe'):
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
    head_learning_rate: float | None = 1e-3  # fresh MLM head/decoder layer lr in pre-training and fine-tuning (None: one lr)
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
    sparse_scale_calibration: bool = True  # stage 1: start the sparse part at its best-loss scale (finetune --sparse-scale-calibration)
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
    def quick(cls, **kw) -> "RecipeConfig":
        """The shortened form (``--quick``): stage 1 only, with the ablation (stage 1 without
        pre-training), so the table still has every system the comparison needs."""
        base = dict(stages=(1,))
        return cls(**{**base, **kw})


def ndcg_recall(run: dict[str, list[tuple[str, float]]], qrels: dict) -> dict[str, float]:
    import ir_measures
    from ir_measures import R, nDCG

    scored = {q: {d: s for d, s in hits} for q, hits in run.items()}
    res = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], {q: qrels[q] for q in qrels}, scored)
    return {"nDCG@10": round(float(res[nDCG @ 10]), 4), "R@100": round(float(res[R @ 100]), 4)}


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

        from .data import doc_text, resolve

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        t_all = time.time()
        self.load_start = os.getloadavg()
        from types import SimpleNamespace

        from .train.common import resolve_precision

        self.precision = resolve_precision(SimpleNamespace(precision=cfg.precision, use_cpu=False))
        from .encoder import dtype_name, resolve_dtype
        from .train.mining import default_device

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
            from .bm25 import bm25_search, build_bm25_index

            index = build_bm25_index(coll, self.out / "bm25-index", progress=self.progress)
            bm25 = bm25_search(index, self.queries, hits=1000, progress=self.progress)
        self.add("BM25 (Pyserini, flat)", bm25)

        with self.timed("zero-shot backbone (mean pooling)"):
            zs = self.exact(cfg.backbone, pooling="mean").search(self.queries, k=1000, modes=("dense",))["dense"]
        self.add("backbone zero-shot, mean pooling (dense)", zs)

        from .runs import fuse

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
        from .modeling.retriever import DupMAERetriever
        from .train.mining import ExactRetriever

        model, tok = DupMAERetriever.from_pretrained(model_path)
        sparse = pooling == "cls" if need_sparse is None else need_sparse
        r = ExactRetriever(model, tok, doc_max_length=self.cfg.eval_doc_max_length,
                           query_max_length=self.cfg.query_max_length, need_sparse=sparse, pooling=pooling,
                           dtype=self.eval_dtype)
        return r.index(list(self.docs), list(self.docs.values()), progress=self.progress)

    def pretrain(self) -> Path:
        from .train.pretrain import PretrainArguments, run_pretraining

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
        from .modeling.retriever import RetrieverConfig
        from .train.finetune import FinetuneArguments, run_finetuning
        from .train.mining import negatives_from_run

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
                sparse_weight=cfg.sparse_weight, part_loss_weight=cfg.part_loss_weight, query_max_length=cfg.query_max_length,
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
                    from .data import resolve

                    train_q = resolve(cfg.corpus).queries(cfg.train_split)
                    train_qrels = resolve(cfg.corpus).qrels(cfg.train_split)
                    mined = retriever.search(train_q, k=cfg.mine_depth + cfg.mine_skip + 5, modes=("hybrid",))["hybrid"]
                    negs = negatives_from_run(mined, train_qrels, cfg.mine_depth + cfg.mine_skip, cfg.mine_skip)
                    from .train.finetune import write_negatives

                    write_negatives(self.out / f"{tag}-stage{stage + 1}-negatives.tsv", negs)
            from .runs import fuse

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
        from .outputs import check_output_dir
        from .provenance import provenance, write_json

        check_output_dir(self.out, RECIPE_OUTPUT, self.overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / RECIPE_MARKER, provenance(kind="dupmae_ir.recipe", config=asdict(self.cfg)))

    def report(self) -> dict:
        from .provenance import provenance, write_json

        final = [r for r in self.rows if r["system"].startswith("DupMAE") and r["system"].endswith("hybrid (sum)")]
        best = final[-1]["nDCG@10"] if final else None
        lines = ["| system | nDCG@10 | R@100 | note |", "|---|---|---|---|"]
        lines += [f"| {r['system']} | {r['nDCG@10']:.4f} | {r['R@100']:.4f} | {r['note']} |" for r in self.rows]
        summary = []
        if best is not None:
            summary.append(f"DupMAE hybrid (final stage) nDCG@10 {best:.4f}: bar {BAR} "
                           f"{'met' if best >= BAR else 'NOT met'} ({best - BAR:+.4f}); distance to the 0.732 "
                           f"fusion anchor {best - FUSION_ANCHOR:+.4f}, to this run's fusion {best - self.fusion:+.4f}.")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dupmae_ir.recipe",
        description="End-to-end CPU recipe on the bundled SciFact: BM25, zero-shot backbone (mean pooling), "
                    "their fusion, DupMAE pre-training, fine-tuning stages 1-2 (with and without pre-training), "
                    "evaluation (dense / impact / hybrid); prints one results table.",
    )
    d = RecipeConfig()
    g = p.add_argument_group("run")
    g.add_argument("--quick", action="store_true", help="Shortened form: fine-tuning stage 1 only (with the ablation).")
    g.add_argument("--output", default=d.output, help="Working folder (checkpoints, indexes, results.md/json; default %(default)s).")
    g.add_argument("--overwrite", action="store_true", help="Re-use the working folder of an earlier recipe run (its files are replaced).")
    g.add_argument("--no-ablation", action="store_true", help="Skip fine-tuning without pre-training.")
    g.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    g.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None, help=f"Training precision, pre-training and fine-tuning (default {d.precision}: bf16 on GPUs and on CPUs with native bf16 instructions (AVX512-BF16/AMX); else fp32).")
    g.add_argument("--eval-precision", choices=("fp32", "bf16", "auto"), default=None, help=f"Encoding precision of the evaluations and the stage-2 mining (default {d.eval_precision}, as --precision). Scores are fp32.")
    g = p.add_argument_group("model and data")
    g.add_argument("--backbone", default=d.backbone, help="Backbone to pre-train and fine-tune (default %(default)s: the offline MiniLM-L6).")
    g.add_argument("--corpus", default=d.corpus, help="Collection with corpus, train and test splits (default %(default)s: the bundled SciFact).")
    g.add_argument("--doc-max-length", type=int, default=None, help=f"Passage pieces in training (default {d.doc_max_length}).")
    g.add_argument("--eval-doc-max-length", type=int, default=None, help=f"Passage pieces at evaluation (default {d.eval_doc_max_length}).")
    g = p.add_argument_group("pre-training")
    g.add_argument("--pretrain-steps", type=int, default=None, help=f"DupMAE pre-training steps (default {d.pretrain_steps}).")
    g.add_argument("--pretrain-lr", type=float, default=None, help=f"DupMAE pre-training learning rate (default {d.pretrain_lr}).")
    g.add_argument("--head-learning-rate", type=float, default=None, help=f"Peak lr of the parameters outside the backbone body (the fresh MLM head, the decoder layer), in pre-training and fine-tuning (default {d.head_learning_rate}; 0 = one lr for all, the paper's).")
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--stages", default=None, help="Comma-separated stages (default 1,2).")
    g.add_argument("--ablation-stages", default=None, help="Comma-separated stages of the model without pre-training (default 1; 1,2 adds ~10 min on a 2-core CPU).")
    g.add_argument("--epochs", type=float, default=None, help=f"Epochs per stage (default {d.epochs}).")
    g.add_argument("--stage2-epochs", type=float, default=None, help="Epochs of stage 2 (default: as --epochs).")
    g.add_argument("--dropout", type=float, default=None, help=f"Backbone dropout while fine-tuning (default {d.dropout}: off, ~1.7x faster steps on CPUs; 0.1 = the backbone's).")
    g.add_argument("--group-size", type=int, default=None, help=f"1 positive + negatives per query (default {d.group_size}).")
    g.add_argument("--learning-rate", type=float, default=None, help=f"(default {d.learning_rate})")
    g.add_argument("--sparse-calibration", type=float, default=None, help=f"(default {d.sparse_calibration}; 0 = off)")
    g.add_argument("--sparse-scale-calibration", action=argparse.BooleanOptionalAction, default=None, help=f"Stage 1 starts with the sparse part scaled to its best in-batch loss (finetune --sparse-scale-calibration; default {'on' if d.sparse_scale_calibration else 'off'}).")
    g.add_argument("--sparse-weight", type=float, default=None, help=f"(default {d.sparse_weight})")
    g.add_argument("--temperature", type=float, default=None, help=f"(default {d.temperature})")
    g.add_argument("--part-loss-weight", type=float, default=None, help=f"Also train the dense and the sparse part each on its own, with this weight (default {d.part_loss_weight}; 0 = the paper's loss on the combined score only).")
    return p


def config_from_args(args) -> RecipeConfig:
    kw = {"output": args.output, "threads": args.threads, "backbone": args.backbone, "corpus": args.corpus}
    if args.no_ablation:
        kw["ablation"] = False
    for name in ("doc_max_length", "eval_doc_max_length", "pretrain_steps", "pretrain_lr", "epochs", "stage2_epochs", "group_size",
                 "learning_rate", "sparse_weight", "part_loss_weight", "temperature", "precision", "eval_precision",
                 "dropout", "sparse_scale_calibration"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.sparse_calibration is not None:
        kw["sparse_calibration"] = args.sparse_calibration or None
    if args.head_learning_rate is not None:
        kw["head_learning_rate"] = args.head_learning_rate or None
    if args.stages:
        kw["stages"] = tuple(int(s) for s in args.stages.split(","))
    if args.ablation_stages:
        kw["ablation_stages"] = tuple(int(s) for s in args.ablation_stages.split(","))
    return RecipeConfig.quick(**kw) if args.quick else RecipeConfig(**kw)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    Recipe(config_from_args(args), overwrite=args.overwrite).run()
    return 0


if __name__ == "__main__":
    import sys

    from .errors import run_command

    sys.exit(run_command(main))
