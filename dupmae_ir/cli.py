"""One home for turning a training-arguments dataclass into an ``argparse`` parser.

``python -m dupmae_ir.pretrain`` and ``python -m dupmae_ir.finetune`` expose every field of
:class:`~dupmae_ir.train.pretrain.PretrainArguments` / :class:`~dupmae_ir.train.finetune.FinetuneArguments`
as a flag (``max_seq_length`` -> ``--max-seq-length``), grouped into ``--help`` sections. A field's
``metadata`` gives its ``help`` and, optionally, its ``choices``. Booleans: a field defaulting to False
is a switch (``--resume``); any other boolean (default True, or ``bool | None`` overrides) takes
``true``/``false``.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")


def dataclass_parser(cls, groups: dict[str, list[str]], **parser_kwargs) -> argparse.ArgumentParser:
    """A parser with one flag per field of dataclass ``cls``; ``groups`` maps section title -> field names."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **parser_kwargs)
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for title, names in groups.items():
        group = parser.add_argument_group(title)
        for name in names:
            f = by_name[name]
            flag = "--" + name.replace("_", "-")
            kind = hints[name]
            help_text = f.metadata.get("help", "")
            if kind is bool and f.default is False:
                group.add_argument(flag, action="store_true", help=help_text)
                continue
            base = ([a for a in typing.get_args(kind) if a is not type(None)] or [kind])[0]
            conv = parse_bool if base is bool else base
            choices = f.metadata.get("choices")
            metavar = None if choices else ("{true,false}" if base is bool else name.upper())
            group.add_argument(flag, type=conv, default=f.default, help=help_text, choices=choices, metavar=metavar)
    return parser
