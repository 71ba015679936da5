"""``python -m dupmae_ir.pretrain``: DupMAE pre-training (RetroMAE-2, ACL 2023) of a BERT-style masked LM.

A thin front door over :func:`dupmae_ir.train.pretrain.run_pretraining`; every flag is a field of
:class:`~dupmae_ir.train.pretrain.PretrainArguments` (``--max-seq-length`` = ``max_seq_length``).
Defaults run on a CPU: the offline MiniLM backbone on the bundled SciFact corpus, 200 steps.

Examples::

    python -m dupmae_ir.pretrain --output-dir encoders/dupmae-scifact --max-steps 300
    python -m dupmae_ir.pretrain --output-dir encoders/dupmae-scifact --resume
    torchrun --nproc_per_node 8 -m dupmae_ir.pretrain --model-name-or-path bert-base-uncased \\
        --corpus msmarco-passage --max-seq-length 150 --batch-size 128 --precision bf16 ...
"""
from __future__ import annotations

import sys

from .errors import UserError, run_command


def build_parser():
    from .cli import dataclass_parser
    from .train.pretrain import PretrainArguments, argument_groups

    return dataclass_parser(
        PretrainArguments, argument_groups(),
        prog="python -m dupmae_ir.pretrain",
        description="Pre-train a masked LM with DupMAE (duplex masked auto-encoding: [CLS] decoding + "
                    "ordinary-token bag-of-words decoding + MLM). Writes a Hugging Face masked-LM "
                    "checkpoint plus dupmae_config.json and dupmae_pretrain.json.",
        epilog="Run several processes with torchrun (gloo on CPU, NCCL on GPU); see README 'Pre-training'.")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import logging

    from .train.pretrain import PretrainArguments, run_pretraining

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        pargs = PretrainArguments(**vars(args))
    except ValueError as e:
        raise UserError("arguments", str(e), "see --help") from None
    out = run_pretraining(pargs)
    print(f"pre-trained checkpoint: {out}")


if __name__ == "__main__":
    sys.exit(run_command(main))
