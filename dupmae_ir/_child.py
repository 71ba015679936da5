"""Run a module in a child process that dies with its parent (Linux ``PR_SET_PDEATHSIG``).

``python -m dupmae_ir._child PARENT_PID MODULE ARGS...`` runs ``python -m MODULE ARGS...`` in this
process after asking the kernel to SIGKILL it when the process that started it dies: a killed
``dupmae_ir.encode`` leaves no Anserini indexer running. Use :func:`child_command` to build the line.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def child_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args...`` as a child of this process."""
    return [sys.executable, "-m", "dupmae_ir._child", str(os.getpid()), module, *map(str, args)]


def main() -> None:
    parent, module, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's own clean-up (subprocess.run) still applies
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
