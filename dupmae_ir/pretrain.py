"""``python -m dupmae_ir.pretrain``: DupMAE pre-training (RetroMAE-2, ACL 2023) of a BERT-style masked LM.

Every flag is a field of :class:`~dupmae_ir.train.arguments.PretrainArguments` (``--max-seq-length`` =
``max_seq_length``); defaults run on a CPU: the offline MiniLM backbone on the bundled SciFact corpus.

Examples::

    python -m dupmae_ir.pretrain --output-dir encoders/dupmae-scifact --max-steps 300
    python -m dupmae_ir.pretrain --output-dir encoders/dupmae-scifact --resume
    torchrun --nproc_per_node 8 -m dupmae_ir.pretrain --model-name-or-path bert-base-uncased \\
        --corpus msmarco-passage --max-seq-length 150 --batch-size 128 --precision bf16 ...
"""
from __future__ import annotations

import sys

from .errors import run_command


def build_parser():
    from .cli import ArgumentParser
    from .train.arguments import PretrainArguments

    return ArgumentParser(
        PretrainArguments, prog="python -m dupmae_ir.pretrain",
        description="Pre-train a masked LM with DupMAE (duplex masked auto-encoding: [CLS] decoding + "
                    "ordinary-token bag-of-words decoding + MLM). Writes a Hugging Face masked-LM "
                    "checkpoint plus dupmae_config.json and dupmae_pretrain.json.",
        epilog="Run several processes with torchrun (gloo on CPU, NCCL on GPU); see docs/training.md.")


def main(argv: list[str] | None = None) -> int:
    from .cli import train_main
    from .train.pretraining import run_pretraining

    return train_main(build_parser(), run_pretraining, "pre-trained", argv)


if __name__ == "__main__":
    sys.exit(run_command(main))
