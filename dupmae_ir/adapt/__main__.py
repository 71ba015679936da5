"""``python -m dupmae_ir.adapt``: the label-free route from a corpus without judgments to an adapted
checkpoint and the indexes its served fusion (``dupmae_ir.search --mode hybrid+bm25``) reads."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..cli import CommandParser, HelpFormatter, max_length, nonnegative_int, positive_float, positive_int, unit_float
from ..errors import add_debug_flag, run_command
from ..recipe.config import RECIPE_PRECISIONS
from .config import AdaptConfig

D = AdaptConfig("", "", "")  # the defaults, shown in --help


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m dupmae_ir.adapt",
        description="Adapt a checkpoint to a corpus without relevance judgments: optional DupMAE pre-training on "
                    "the corpus, pseudo-queries from its titles/first sentences, a BM25 + backbone teacher, stage-3 "
                    "distillation, weight interpolation toward the start, then FAISS + Lucene impact + BM25 indexes "
                    "served with `python -m dupmae_ir.search --mode hybrid+bm25`. A re-run skips finished steps.",
        formatter_class=HelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--corpus", required=True,
                    help="target collection: a BEIR folder, a JSONL collection or an id")
    io.add_argument("--checkpoint", required=True,
                    help="start checkpoint (a DupMAE/HF folder, or 'default')")
    io.add_argument("--output", required=True,
                    help="work folder (encoders/adapt-NAME); the adapted model: OUTPUT/adapted")
    io.add_argument("--indexes", default=None, help="index folder: INDEXES/dupmae and INDEXES/bm25 (default: "
                                                    "indexes/<name of OUTPUT>)")
    io.add_argument("--data-dir", default=None,
                    help="folder of local BEIR collections for a --corpus name")
    io.add_argument("--overwrite", action="store_true", help="redo the steps whose settings changed since an "
                                                             "earlier run of OUTPUT (never others' files)")
    s = p.add_argument_group("steps")
    s.add_argument("--pretrain-steps", type=nonnegative_int, default=D.pretrain_steps, metavar="N",
                   help="DupMAE pre-training steps on the target corpus (0: skip)")
    s.add_argument("--pretrain-lr", type=positive_float, metavar="X", default=D.pretrain_lr,
                   help="pre-training learning rate")
    s.add_argument("--pseudo-queries", type=positive_int, default=D.pseudo_queries, metavar="N",
                   help="documents sampled (seeded) to ask for themselves with their title or first sentence")
    s.add_argument("--query-words", type=positive_int, default=D.query_words, metavar="N",
                   help="words kept of each pseudo-query")
    s.add_argument("--teacher-backbone", default=D.teacher_backbone, metavar="CKPT",
                   help="untouched backbone fused with BM25 as the teacher (mean pooling)")
    s.add_argument("--teacher-depth", type=positive_int, default=D.teacher_depth, metavar="N",
                   help="teacher documents per pseudo-query (the source document added if missing)")
    s.add_argument("--teacher-temperature", type=positive_float, metavar="X", default=D.teacher_temperature,
                   help="temperature of the teacher's fused scores (in [0, 2]) in the distillation")
    s.add_argument("--lr", type=positive_float, metavar="X", default=D.lr,
                   help="stage-3 fine-tuning peak learning rate")
    s.add_argument("--epochs", type=positive_float, metavar="X", default=D.epochs,
                   help="stage-3 fine-tuning epochs")
    s.add_argument("--interpolate", type=unit_float, default=D.interpolate, metavar="ALPHA",
                   help="WiSE-FT weight in [0, 1]: 1 = the fine-tuned weights, 0 = the start's")
    s.add_argument("--batch-size", type=positive_int, metavar="N", default=D.batch_size,
                   help="pseudo-queries per batch")
    s.add_argument("--group-size", type=positive_int, metavar="N", default=D.group_size,
                   help="documents per pseudo-query in training (the source + teacher-ranked others)")
    s.add_argument("--doc-max-length", type=max_length, metavar="N", default=D.doc_max_length,
                   help="document pieces in the teacher and the index")
    s.add_argument("--query-max-length", type=max_length, metavar="N", default=D.query_max_length,
                   help="query pieces in the teacher, training and search")
    s.add_argument("--seed", type=nonnegative_int, metavar="N", default=D.seed,
                   help="seed of sampling, pre-training and fine-tuning")
    s.add_argument("--precision", default=D.precision, choices=RECIPE_PRECISIONS,
                   help="training and encoding precision (auto: bf16 on CPUs with native bf16, else fp32)")
    s.add_argument("--threads", type=positive_int, metavar="N", default=None,
                   help="torch threads (default: torch's choice)")
    s.add_argument("--no-progress", action="store_true",
                   help="no progress bars")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    from ..errors import UserError
    from .run import Adaptation

    if args.pretrain_steps < 0:
        raise UserError("--pretrain-steps", f"{args.pretrain_steps} is negative", "pass 0 (skip) or a step count")
    settings = {k: v for k, v in vars(args).items() if k not in ("overwrite", "no_progress", "debug")}
    summary = Adaptation(AdaptConfig(**settings, progress=not args.no_progress), overwrite=args.overwrite).run()
    print(f"\nadapted checkpoint: {summary.checkpoint}")
    print(f"indexes:            {summary.index} (FAISS + Lucene impact), {summary.bm25_index} (BM25)")
    print(f"work folder:        {summary.work} (state: dupmae_adapt.json)")
    print(f"steps run:          {', '.join(summary.ran) or 'none'}; skipped: {', '.join(summary.skipped) or 'none'}")
    print(f"search (served fusion recorded in the index): {summary.search_command}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
