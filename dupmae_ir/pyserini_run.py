"""Run a stock Pyserini command with a working Java 21: ``python -m dupmae_ir.pyserini_run <module> ...``.

Examples::

    python -m dupmae_ir.pyserini_run search.lucene --index idx --topics q.tsv --output run.txt --bm25
    python -m dupmae_ir.pyserini_run index.lucene --collection JsonCollection --input docs --index idx
    eval "$(python -m dupmae_ir.pyserini_run --exports)"   # then plain `python -m pyserini.*` works

The module name may be given with or without the ``pyserini.`` prefix. The command runs in a child
process (which dies with this one) with the environment from :func:`dupmae_ir.java.java_env`; its
exit code is passed through.
"""
from __future__ import annotations

import subprocess
import sys

from ._child import child_command
from .java import export_lines, java_env

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--exports":
        print(export_lines())
        return 0
    module = argv[0] if argv[0].startswith("pyserini") else f"pyserini.{argv[0]}"
    return subprocess.call(child_command(module, *argv[1:]), env=java_env())


if __name__ == "__main__":
    sys.exit(main())
