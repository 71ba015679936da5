"""Number types with ranges: argparse ``type`` functions whose error names the allowed range, used by every
command's flags (:mod:`dupmae_ir.cli`) and by the training dataclasses' own checks
(:mod:`dupmae_ir.train.arguments`)."""
from __future__ import annotations

import argparse
import math


def number(kind=int, low=None, high=None, low_open: bool = False, what: str | None = None):
    """An argparse ``type``: ``kind`` (int or float), finite, within ``[low, high]`` (``(low, high]`` with
    ``low_open``); the error names the allowed range."""
    bounds = [f"> {low}" if low_open else f">= {low}"] if low is not None else []
    bounds += [f"<= {high}"] if high is not None else []
    rule = what or f"{'an integer' if kind is int else 'a finite number'}{' ' if bounds else ''}{' and '.join(bounds)}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {rule}") from None
        if (not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low))
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {rule}")
        return value

    parse.__name__ = rule
    return parse


positive_int = number(int, 1)
nonnegative_int = number(int, 0)
port_number = number(int, 0, 65535)
finite_float = number(float)
nonnegative_float = number(float, 0.0)
positive_float = number(float, 0.0, low_open=True)
unit_float = number(float, 0.0, 1.0)
fraction = number(float, 0.0, 1.0, low_open=True, what="a fraction in (0, 1)")
# [CLS] and [SEP] take two pieces; the model's position limit is checked when its config is read
max_length = number(int, 2, what="a length >= 2 (word pieces, [CLS] and [SEP] included)")
