"""``python -m dupmae_ir.recipe``: the CPU recipe on the bundled SciFact, end to end, in one table.

Every setting of :class:`~.config.RecipeConfig` is a flag, generated from its fields (``--pretrain-lr``
for ``pretrain_lr``, one ``--help`` section per part); a flag that is not given keeps the config's default."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing

from .. import cli
from ..cli import CommandParser, HelpFormatter
from ..errors import add_debug_flag, run_command
from . import Recipe, RecipeConfig


def _shown(value) -> str:
    """A default as the flag is written."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _parse(hint):
    """The argparse type of a field annotated ``hint`` (``X | None``: X)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    return args[0]


def add_settings(parser: argparse.ArgumentParser, cfg: RecipeConfig) -> None:
    """One flag per setting of ``cfg`` (its values shown as the defaults), in a section per part."""
    for part, kind in cfg.parts().items():
        group = parser.add_argument_group(kind.__doc__.strip())
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            meta, default = f.metadata, getattr(getattr(cfg, part), f.name)
            flag = "--" + f.name.replace("_", "-")
            kw = dict(default=argparse.SUPPRESS, help=f"{meta.get('help', '')} (default {_shown(default)})".strip())
            if hints[f.name] is bool:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                parse = meta.get("parse") or _parse(hints[f.name])
                kw["type"] = getattr(cli, parse) if isinstance(parse, str) else parse
                if meta.get("choices"):
                    kw["choices"] = meta["choices"]
                else:
                    kw["metavar"] = {int: "N", float: "X"}.get(_parse(hints[f.name]), f.name.split("_")[-1].upper())
            group.add_argument(flag, **kw)


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m dupmae_ir.recipe",
        description="End-to-end CPU recipe on the bundled SciFact: BM25, zero-shot backbone (mean pooling), "
                    "their fusion, DupMAE pre-training, fine-tuning stages 1-2 (with and without pre-training); "
                    "every model encoded into FAISS + Lucene indexes, searched (dense / impact / hybrid) and scored "
                    "into one report with its plot (eval/<name>/).",
        formatter_class=HelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--quick", action="store_true", help="Shortened form: fine-tuning stage 1 only (with the ablation).")
    g.add_argument("--overwrite", action="store_true",
                   help="Replace the outputs of an earlier recipe run of the same name (never others' files).")
    add_settings(p, RecipeConfig())
    add_debug_flag(p)
    return p


def config_from_args(args) -> RecipeConfig:
    """The config of the parsed flags: the given settings over the defaults (``--quick``'s, with it)."""
    given = {k: v for k, v in vars(args).items() if k in RecipeConfig.settings()}
    return RecipeConfig.quick(**given) if args.quick else RecipeConfig.of(**given)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    Recipe(config_from_args(args), overwrite=args.overwrite).run()
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
