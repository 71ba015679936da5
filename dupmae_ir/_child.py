"""Run a module in a child process that dies with its parent (Linux ``PR_SET_PDEATHSIG``).

``python -m dupmae_ir._child PARENT_PID MODULE ARGS...`` runs ``python -m MODULE ARGS...`` in this
process after asking the kernel to SIGKILL it when the process that started it dies: a killed
``dupmae_ir.encode`` leaves no Anserini indexer running. Use :func:`child_command` to build the line.
With ``peak_rss=True`` the child ends its stderr with its own peak resident set (:func:`read_peak_rss`).
"""
from __future__ import annotations

import os
import re
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1
PEAK_FLAG = "--report-peak-rss"
PEAK_LINE = "dupmae_ir._child peak_rss_kib="


def child_command(module: str, *args: str, peak_rss: bool = False) -> list[str]:
    """The command line that runs ``python -m module args...`` as a child of this process."""
    return [sys.executable, "-m", "dupmae_ir._child", *([PEAK_FLAG] if peak_rss else []), str(os.getpid()), module,
            *map(str, args)]


def own_peak_rss_kib() -> int | None:
    """This process's peak resident set (``VmHWM``). Not getrusage's ``ru_maxrss``: a forked child's starts at its
    parent's high-water mark, so a small child of a large process would read as large."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("VmHWM:")), None)
    except OSError:  # not Linux
        return None


def read_peak_rss(stderr: str) -> float | None:
    """The peak RSS in MiB that a ``peak_rss=True`` child printed last on ``stderr`` (None if it printed none)."""
    found = re.findall(re.escape(PEAK_LINE) + r"(\d+)", stderr)
    return int(found[-1]) / 1024 if found else None


def main() -> None:
    peak = sys.argv[1] == PEAK_FLAG
    parent, module, args = int(sys.argv[1 + peak]), sys.argv[2 + peak], sys.argv[3 + peak:]
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's own clean-up (subprocess.run) still applies
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        if peak:
            print(f"{PEAK_LINE}{own_peak_rss_kib()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
