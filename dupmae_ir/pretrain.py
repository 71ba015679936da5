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

import argparse
import dataclasses
import sys
import typing


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")


def build_parser() -> argparse.ArgumentParser:
    from .train.pretrain import PretrainArguments, argument_groups

    parser = argparse.ArgumentParser(
        prog="python -m dupmae_ir.pretrain",
        description="Pre-train a masked LM with DupMAE (duplex masked auto-encoding: [CLS] decoding + "
                    "ordinary-token bag-of-words decoding + MLM). Writes a Hugging Face masked-LM "
                    "checkpoint plus dupmae_config.json and dupmae_pretrain.json.",
        epilog="Run several processes with torchrun (gloo on CPU, NCCL on GPU); see README 'Pre-training'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(PretrainArguments)
    by_name = {f.name: f for f in dataclasses.fields(PretrainArguments)}
    for title, names in argument_groups().items():
        group = parser.add_argument_group(title)
        for name in names:
            f = by_name[name]
            flag = "--" + name.replace("_", "-")
            kind = hints[name]
            help_text = f.metadata.get("help", "")
            if kind is bool:
                group.add_argument(flag, action="store_true", help=help_text)
                continue
            base = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
            base = base[0]
            conv = _parse_bool if base is bool else base
            choices = f.metadata.get("choices")
            group.add_argument(flag, type=conv, default=f.default, help=help_text, choices=choices,
                               metavar=None if choices else (name.upper() if base is not bool else "{true,false}"))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import logging

    from .train.pretrain import PretrainArguments, run_pretraining

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        out = run_pretraining(PretrainArguments(**vars(args)))
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # bad input: one clear line, no traceback
        sys.exit(f"error: {e}")
    print(f"pre-trained checkpoint: {out}")


if __name__ == "__main__":
    main()
