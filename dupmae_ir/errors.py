"""Errors a user can fix, and the one way every command reports them.

A :class:`UserError` prints as one line ``<where>: <what> (fix: <fix>)``: ``where`` is the file (with
its line when there is one), the flag or the collection at fault. Every ``python -m dupmae_ir.X``
command runs its ``main`` through :func:`run_command`, which prints ``error: <that line>`` and exits
with status 2; ``--debug`` (or ``DUPMAE_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
DEBUG_FLAG = "--debug"
DEBUG_ENV = "DUPMAE_DEBUG"


class UserError(Exception):
    """Something the user can fix. ``str()`` is one line: ``<where>: <what> (fix: <fix>)``."""

    def __init__(self, where, what: str, fix: str | None = None):
        self.where, self.what, self.fix = str(where), what, fix
        text = f"{self.where}: {what}" + (f" (fix: {fix})" if fix else "")
        super().__init__(" ".join(text.split()))  # one line, whatever the parts held


class DataError(UserError, ValueError):
    """Bad input data (corpus, queries, qrels, runs): names the file, line and field."""


class IndexFormatError(UserError):
    """A missing, corrupt or inconsistent file of an index written by the toolkit."""


class OutputError(UserError):
    """An output path the toolkit refuses to write (it would replace data it did not create)."""


def add_debug_flag(parser) -> None:
    """``--debug`` in a command's ``--help`` (:func:`run_command` consumes the flag itself)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the Python traceback of an error (also: {DEBUG_ENV}=1)")


def _io_error_line(e: OSError) -> str | None:
    """One line for an OS error a user can act on (disk full, file too large, no permission)."""
    fixes = {errno.ENOSPC: "free disk space, or write to another disk",
             errno.EDQUOT: "free space within your quota, or write elsewhere",
             errno.EFBIG: "raise the file-size limit (ulimit -f), or write elsewhere",
             errno.EACCES: "choose a path you may write to",
             errno.EROFS: "choose a path on a writable file system"}
    if e.errno not in fixes:
        return None
    return str(UserError(e.filename or "output", e.strerror or str(e), fixes[e.errno]))


def run_command(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run a command's ``main(argv)``; a :class:`UserError` (or a disk-full/permission error) becomes
    ``error: <one line>`` on stderr and exit status 2, and Ctrl-C one line and status 130, unless
    ``--debug``/``DUPMAE_DEBUG`` asks for the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        code = main(argv)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        line = _io_error_line(e)
        if debug or line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"interrupted (Ctrl-C); add {DEBUG_FLAG} for the traceback", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(code or 0)
