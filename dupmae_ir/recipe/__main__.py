"""``python -m dupmae_ir.recipe``: the CPU recipe on the bundled SciFact, end to end, in one table."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..cli import (
    CommandParser,
    HelpFormatter,
    fraction,
    max_length,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    unit_float,
)
from ..errors import add_debug_flag, run_command
from . import Recipe, RecipeConfig


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m dupmae_ir.recipe",
        description="End-to-end CPU recipe on the bundled SciFact: BM25, zero-shot backbone (mean pooling), "
                    "their fusion, DupMAE pre-training, fine-tuning stages 1-2 (with and without pre-training); "
                    "every model encoded into FAISS + Lucene indexes, searched (dense / impact / hybrid) and scored "
                    "into one report with its plot (eval/<name>/).",
        formatter_class=HelpFormatter)
    d = RecipeConfig()
    g = p.add_argument_group("run")
    g.add_argument("--quick", action="store_true", help="Shortened form: fine-tuning stage 1 only (with the ablation).")
    g.add_argument("--output", default=d.output,
                   help="Working folder of checkpoints (default %(default)s); its name NAME also names "
                        "indexes/NAME/, runs/NAME/ and eval/NAME/.")
    g.add_argument("--overwrite", action="store_true",
                   help="Replace the outputs of an earlier recipe run of the same name (never others' files).")
    g.add_argument("--seed", type=nonnegative_int, default=None,
                   help=f"Seed of pre-training and fine-tuning (default {d.seed}).")
    g.add_argument("--holdout-fraction", type=fraction, default=None,
                   help="Fine-tune without this seeded part of the training queries and report it as a dev split "
                        "(for choosing settings; default: train on every training query).")
    g.add_argument("--no-ablation", action="store_true",
                   help="Skip fine-tuning without pre-training (by default the backbone is also fine-tuned without it "
                        "at every stage, with the same settings and seed, and each pair is tested).")
    g.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice).")
    g.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None,
                   help=f"Training precision, pre-training and fine-tuning (default {d.precision}: bf16 on GPUs "
                        "and on CPUs with native bf16 instructions (AVX512-BF16/AMX); else fp32).")
    g.add_argument("--eval-precision", choices=("fp32", "bf16", "auto"), default=None,
                   help="Encoding precision of the evaluations and the stage-2 mining "
                        f"(default {d.eval_precision}, as --precision). Scores are fp32.")
    g = p.add_argument_group("model and data")
    g.add_argument("--backbone", default=d.backbone,
                   help="Backbone to pre-train and fine-tune (default %(default)s: the offline MiniLM-L6).")
    g.add_argument("--corpus", default=d.corpus,
                   help="Collection with corpus, train and test splits (default %(default)s: the bundled SciFact).")
    g.add_argument("--doc-max-length", type=max_length, default=None,
                   help=f"Passage pieces in training (default {d.doc_max_length}).")
    g.add_argument("--eval-doc-max-length", type=max_length, default=None,
                   help=f"Passage pieces at evaluation (default {d.eval_doc_max_length}).")
    g = p.add_argument_group("pre-training")
    g.add_argument("--pretrain-steps", type=positive_int, default=None,
                   help=f"DupMAE pre-training steps (default {d.pretrain_steps}).")
    g.add_argument("--pretrain-lr", type=positive_float, default=None,
                   help=f"DupMAE pre-training learning rate (default {d.pretrain_lr}).")
    g.add_argument("--pretrain-corpus", default=None,
                   help="Pre-train on this collection's documents instead of --corpus (domain adaptation: the corpus "
                        "the model will search, no labels needed).")
    g.add_argument("--head-learning-rate", type=nonnegative_float, default=None,
                   help="Peak lr of the parameters outside the backbone body (the fresh MLM head, the decoder layer), "
                        f"in pre-training and fine-tuning (default {d.head_learning_rate}; "
                        "0 = one lr for all, the paper's).")
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--stages", default=None, help="Comma-separated stages (default 1,2).")
    g.add_argument("--epochs", type=positive_float, default=None, help=f"Epochs of stage 1 (default {d.epochs:g}).")
    g.add_argument("--stage2-epochs", type=positive_float, default=None,
                   help=f"Epochs of stage 2 (default {d.stage2_epochs:g}, chosen on the dev split).")
    g.add_argument("--dropout", type=unit_float, default=None,
                   help=f"Backbone dropout while fine-tuning (default {d.dropout}: off, ~1.7x faster steps on CPUs; "
                        "0.1 = the backbone's).")
    g.add_argument("--group-size", type=positive_int, default=None,
                   help=f"1 positive + negatives per query (default {d.group_size}).")
    g.add_argument("--learning-rate", type=positive_float, default=None, help=f"(default {d.learning_rate})")
    g.add_argument("--sparse-calibration", type=nonnegative_float, default=None,
                   help=f"(default {d.sparse_calibration}; 0 = off)")
    g.add_argument("--sparse-scale-calibration", action=argparse.BooleanOptionalAction, default=None,
                   help="Stage 1 starts with the sparse part scaled to its best in-batch loss "
                        "(finetune --sparse-scale-calibration; "
                        f"default {'on' if d.sparse_scale_calibration else 'off'}).")
    g.add_argument("--sparse-weight", type=nonnegative_float, default=None, help=f"(default {d.sparse_weight})")
    g.add_argument("--temperature", type=positive_float, default=None, help=f"(default {d.temperature})")
    g.add_argument("--query-topk", type=positive_int, default=None,
                   help="Keep each query's N largest impact weights, written into each fine-tuned checkpoint "
                        f"(default {d.query_topk}, chosen on the dev split; 1024 keeps all the paper's terms "
                        "that Lucene accepts).")
    g.add_argument("--query-min-weight", type=nonnegative_float, default=None,
                   help="Drop query impact weights below this (written into each fine-tuned checkpoint).")
    g.add_argument("--part-loss-weight", type=nonnegative_float, default=None,
                   help="Also train the dense and the sparse part each on its own, with this weight "
                        f"(default {d.part_loss_weight}; 0 = the paper's loss on the combined score only).")
    g.add_argument("--flops-query", type=nonnegative_float, default=None,
                   help=f"FLOPS sparsity regularisation weight on query bag-of-words, every stage (default "
                        f"{d.flops_query}: the paper's loss; 1.0 won a stage-1 dev study, eval/flops-selection.md).")
    g.add_argument("--flops-doc", type=nonnegative_float, default=None,
                   help=f"FLOPS sparsity regularisation weight on document bag-of-words, every stage (default "
                        f"{d.flops_doc}: the paper's loss; 1.0 won a stage-1 dev study, eval/flops-selection.md).")
    add_debug_flag(p)
    return p


def config_from_args(args) -> RecipeConfig:
    kw = {"output": args.output, "threads": args.threads, "backbone": args.backbone, "corpus": args.corpus}
    if args.no_ablation:
        kw["ablation"] = False
    for name in ("doc_max_length", "eval_doc_max_length", "pretrain_steps", "pretrain_lr", "epochs", "stage2_epochs",
                 "group_size",
                 "learning_rate", "sparse_weight", "part_loss_weight", "temperature", "precision", "eval_precision",
                 "dropout", "sparse_scale_calibration", "seed", "holdout_fraction", "pretrain_corpus", "query_topk",
                 "query_min_weight", "flops_query", "flops_doc"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.sparse_calibration is not None:
        kw["sparse_calibration"] = args.sparse_calibration or None
    if args.head_learning_rate is not None:
        kw["head_learning_rate"] = args.head_learning_rate or None
    if args.stages:
        kw["stages"] = tuple(int(s) for s in args.stages.split(","))
    return RecipeConfig.quick(**kw) if args.quick else RecipeConfig(**kw)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    Recipe(config_from_args(args), overwrite=args.overwrite).run()
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
