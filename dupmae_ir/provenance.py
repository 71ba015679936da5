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


def machine() -> dict:
    """The machine a figure came from: CPU model, cores, whether it has native bf16 (AVX512-BF16/AMX),
    memory, and the GPUs torch sees (only when torch is already imported: this stays cheap)."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), None)
        flags = set(next((ln.split(":", 1)[1] for ln in text.splitlines() if ln.startswith("flags")), "").split())
        info.update(cpu=model or info["cpu"], avx512_bf16=bool(flags & {"avx512_bf16", "amx_bf16"}))
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        info["memory_gib"] = round(int(mem.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def git_commit(folder: str | Path | None = None) -> str | None:
    """The commit of the toolkit's checkout (``+dirty`` when it has uncommitted changes), or None."""
    import subprocess

    root = Path(folder) if folder else Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def report_header(title: str, what: str, commands: list[str]) -> str:
    """The head of a committed Markdown report: what was measured, the commands, date, machine, commit."""
    m = machine()
    bf16 = ", AVX512-BF16" if m.get("avx512_bf16") else ", no AVX512-BF16"
    memory = f", {m['memory_gib']} GiB" if "memory_gib" in m else ""
    cpu = f"{m.get('cpu')} ({m.get('cores')} cores{bf16}{memory})"
    lines = [f"# {title}", "", what, "", "| | |", "|---|---|",
             f"| **Command** | {'<br>'.join(f'`{c}`' for c in commands)} |",
             f"| **Date** | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} |",
             f"| **Machine** | {cpu}" + (f"; GPUs: {', '.join(m['gpus'])}" if m.get("gpus") else "") + " |",
             f"| **Commit** | {git_commit() or 'not a git checkout'} |", ""]
    return "\n".join(lines)


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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file: name the output
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_json(path: str | Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
