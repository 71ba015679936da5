"""Provenance beside every artifact, and atomic writes (temporary name, then rename)."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path


def provenance(**info) -> dict:
    """A provenance record: the caller's fields plus toolkit version, command line, time, host."""
    from . import __version__

    return {
        **info,
        "dupmae_ir_version": __version__,
        "command": command_line(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "host": platform.node(),
    }


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would retype it: ``python -m dupmae_ir.eval beir ...`` for a module run with
    ``-m`` (Python puts the module's file path in ``sys.argv[0]``), else ``python <argv...>``."""
    argv = list(sys.argv if argv is None else argv)
    head = [Path(sys.executable).name]
    if argv and argv[0].endswith(".py"):
        package = Path(__file__).resolve().parent
        try:
            rel = Path(argv[0]).resolve().relative_to(package.parent)
        except ValueError:
            rel = None
        if rel is not None and rel.parts[0] == package.name:
            module = ".".join(rel.with_suffix("").parts)
            argv = ["-m", module.removesuffix(".__main__"), *argv[1:]]
    return " ".join(shlex.quote(a) for a in [*head, *argv])


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename: a
    failed write (disk full) leaves ``path`` as it was and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
