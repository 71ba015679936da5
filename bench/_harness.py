"""What every benchmark under ``bench/`` shares, so that each ``eval/`` report is written the same way:

- :func:`add_report_args`: ``--report PATH`` (and ``--append`` where a script adds sections);
- :func:`header`: the report's head (title, what was measured, the command with paths relative to the
  repository or as placeholders, date, machine with its bf16 support, commit), from
  :func:`dupmae_ir.provenance.report_header`;
- :func:`markdown_table`, :func:`write_report`, :func:`append_section`, :func:`add_table_row`: Markdown
  written through :func:`dupmae_ir.provenance.atomic_write_text` (a failed write leaves the old report);
- :func:`percentile`: one convention (nearest rank);
- :class:`Timer`: wall seconds of a block (``sync`` waits for a GPU first);
- :func:`run_measured`: one command in a child process, its wall seconds, peak RSS and output;
- :func:`du`: MiB of the files under a folder.

Scripts are run as ``python bench/NAME.py`` from the repository root; importing this module puts the
checkout's ``dupmae_ir`` first on ``sys.path``.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def add_report_args(parser, default: str | None = None, append: bool = False, help: str | None = None) -> None:
    """``--report PATH`` (write the results as a Markdown report there) and, with ``append``, ``--append``."""
    parser.add_argument("--report", default=default,
                        help=help or "write the results as a Markdown report here (command, date, machine, commit)")
    if append:
        parser.add_argument("--append", action="store_true", help="add a section to an existing --report")


def header(title: str, what: str) -> str:
    """The head of a report of this run: title, what was measured, this command (portable paths), date,
    machine (CPU model, cores, bf16 support, memory, GPUs) and commit."""
    from dupmae_ir.provenance import command_line, report_header

    return report_header(title, what, [command_line()])


def portable(path) -> str:
    """A path as a report spells it (relative to the repository, ``$WORK/...``, ``default``)."""
    from dupmae_ir.provenance import portable_path

    return portable_path(path)


def machine() -> dict:
    """The machine a figure came from (:func:`dupmae_ir.provenance.machine`)."""
    from dupmae_ir.provenance import machine as info

    return info()


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    """A Markdown table, one line per row; cells are written as given (format numbers before)."""
    return ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def write_report(path: str | Path, text: str) -> None:
    """Write ``text`` (a whole report) to ``path`` atomically, ending in one newline."""
    from dupmae_ir.provenance import atomic_write_text

    atomic_write_text(path, text.rstrip("\n") + "\n")
    print(f"report: {path}", file=sys.stderr)


def append_section(path: str | Path, head: str, section: str) -> None:
    """Add ``section`` to the report at ``path``; a missing report starts with ``head``."""
    path = Path(path)
    before = path.read_text(encoding="utf-8") if path.is_file() else head
    write_report(path, before.rstrip("\n") + "\n\n" + section)


def add_table_row(path: str | Path, row: str, table_head: Sequence[str]) -> None:
    """Insert ``row`` after the last table line of the report at ``path`` (prose after the table stays
    after it); a missing report is created as ``table_head`` plus the row."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else list(table_head)
    last = max((i for i, line in enumerate(lines) if line.startswith("|")), default=len(lines) - 1)
    write_report(path, "\n".join(lines[:last + 1] + [row] + lines[last + 1:]))


def claim_work_dir(path: str | Path, script: str) -> Path:
    """A benchmark's working folder, through the toolkit's ownership check: new, or one this script made
    before (its marker inside); a folder the toolkit did not write is refused, never written into."""
    from dupmae_ir.errors import UserError
    from dupmae_ir.outputs import OutputKind, check_output_dir
    from dupmae_ir.provenance import provenance, write_json

    kind = OutputKind(f"{script} working folder", "dupmae_bench.json", (f"bench.{script}",))
    try:
        path = check_output_dir(path, kind, overwrite=True)
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / kind.marker, provenance(kind=f"bench.{script}"))
    return path


def du(path: Path) -> float:
    """MiB of the files under ``path`` (an index's size on disk)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 100]: the smallest value with at least q% of the values at
    or below it (nan for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``: wall-clock seconds of the block; ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before the start and before the stop."""

    def __init__(self, sync: Callable[[], None] | None = None):
        self.sync, self.seconds = sync, float("nan")

    def __enter__(self) -> Timer:
        if self.sync:
            self.sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.sync:
            self.sync()
        self.seconds = time.perf_counter() - self._start


# A forked child's ru_maxrss starts at its parent's high-water mark (Linux carries it across exec), so a
# large benchmark process would inflate every child's peak: a small launcher forks the command and reports it.
_LAUNCHER = ("import os, sys\n"
             "pid = os.fork()\n"
             "if pid == 0:\n"
             "    try:\n"
             "        os.execvp(sys.argv[2], sys.argv[2:])\n"
             "    except OSError as e:\n"
             "        print(f'cannot run {sys.argv[2]}: {e}', file=sys.stderr, flush=True)\n"
             "    os._exit(127)\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
             "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_measured(cmd: Sequence, env: dict | None = None, log: str | Path | None = None) -> tuple[float, float, str]:
    """Run ``cmd`` from the repository root in its own process: (wall seconds, peak RSS MiB of that process
    alone, its output). Output goes to ``log`` when given (then returned as ""), else it is captured; stdout
    and stderr together. A failure exits with the command and the last 3,000 characters of its output."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "maxrss"
        seconds, status, out = _run([sys.executable, "-c", _LAUNCHER, str(rss_file), *map(str, cmd)], env, log)
        peak = int(rss_file.read_text()) / 1024 if rss_file.is_file() else float("nan")
    if status != 0:
        tail = (Path(log).read_text(encoding="utf-8", errors="replace") if log else out)[-3000:]
        raise SystemExit(f"failed{f' ({log})' if log else ''}: {' '.join(map(str, cmd))}\n{tail}")
    return seconds, peak, out


def _run(cmd: list[str], env: dict | None, log: str | Path | None) -> tuple[float, int, str]:
    """(wall seconds, exit status, captured output) of ``cmd`` run from the repository root."""
    env = env if env is not None else {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                                       "PYTHONPATH": str(ROOT)}
    sink = open(log, "w", encoding="utf-8") if log else subprocess.PIPE
    try:
        with Timer() as t:
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                    encoding="utf-8", errors="replace")
            try:
                out = proc.stdout.read() if not log else ""
                status = proc.wait()
            except BaseException:  # interrupted: no measured child outlives the bench
                proc.kill()
                raise
    finally:
        if log:
            sink.close()
    return t.seconds, status, out
