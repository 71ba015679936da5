"""``python -m dupmae_ir.finetune``: fine-tune a DupMAE retriever (three stages, paper section 4).

Every flag is a field of :class:`~dupmae_ir.train.arguments.FinetuneArguments` (``--group-size`` =
``group_size``); defaults run on a CPU: the offline MiniLM backbone on the bundled SciFact train split.

Examples::

    # stage 1: in-batch + BM25 negatives (Pyserini), from a DupMAE pre-trained checkpoint
    python -m dupmae_ir.finetune --stage 1 --model-name-or-path encoders/dupmae-scifact \\
        --output-dir encoders/dupmae-scifact-s1
    # stage 2: hard negatives mined by the stage-1 model itself (top-200, positives removed)
    python -m dupmae_ir.finetune --stage 2 --model-name-or-path encoders/dupmae-scifact-s1 \\
        --output-dir encoders/dupmae-scifact-s2
    # stage 3: distillation from cross-encoder scores ('qid docid score' lines)
    python -m dupmae_ir.finetune --stage 3 --model-name-or-path encoders/dupmae-scifact-s2 \\
        --teacher-scores ce_scores.tsv --output-dir encoders/dupmae-scifact-s3
    # 8 GPUs, negatives shared across processes
    torchrun --nproc_per_node 8 -m dupmae_ir.finetune --stage 1 --train msmarco-passage ...
"""
from __future__ import annotations

import sys

from .errors import run_command


def build_parser():
    from .cli import ArgumentParser
    from .train.arguments import FinetuneArguments

    return ArgumentParser(
        FinetuneArguments, prog="python -m dupmae_ir.finetune",
        description="Fine-tune a DupMAE bi-encoder on its combined score (dense [CLS] inner product + "
                    "bag-of-words inner product). Stage 1: in-batch + BM25/file negatives; stage 2: hard "
                    "negatives mined by the stage-1 model; stage 3: distillation from teacher scores. "
                    "Writes a DupMAEModel checkpoint (HF masked LM + dupmae_config.json) for "
                    "dupmae_ir.encode/search/eval, whose encoder stock Pyserini reads with "
                    "--encoder-class auto --pooling cls.",
        epilog="Run several processes with torchrun (gloo on CPU, NCCL on GPU): documents of every process "
               "are shared as negatives. See docs/training.md.")


def main(argv: list[str] | None = None) -> int:
    from .cli import train_main
    from .train.finetuning import run_finetuning

    return train_main(build_parser(), run_finetuning, "fine-tuned", argv)


if __name__ == "__main__":
    sys.exit(run_command(main))
