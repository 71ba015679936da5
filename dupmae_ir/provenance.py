"""Provenance beside every artifact, and atomic writes (temporary name, then rename)."""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable
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
    ``-m`` (Python puts the module's file path in ``sys.argv[0]``), else ``python <argv...>``; every path
    spelt by :func:`portable_path`, so that a committed report names no folder of this machine."""
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
    return " ".join(_quote(_portable_arg(a)) for a in [*head, *argv])


# Paths spelt by a name in reports: {absolute path: name}, filled by the code that resolves a name to a
# path (modeling.backbone registers the default backbone's installed folder as "default")
PATH_NAMES: dict[str, str] = {}


def portable_path(path: str | os.PathLike) -> str:
    """``path`` as a report spells it: a registered model folder by its name (``default``), a path in
    the repository relative to it, one under ``$DUPMAE_SHARED_DATA`` (default: ``../shared/data`` beside
    the repository) or ``$HOME`` with that placeholder,
    any other absolute path as ``$WORK/<the path below its top folder>`` (``/tmp/x/y`` -> ``$WORK/x/y``).
    A relative path is taken from the current folder."""
    text = os.fspath(path)
    absolute = os.path.abspath(os.path.expanduser(text))
    for folder, name in PATH_NAMES.items():
        if absolute == folder or absolute.startswith(folder + os.sep):
            return name + absolute[len(folder):]
    root = str(Path(__file__).resolve().parent.parent)
    if absolute == root or absolute.startswith(root + os.sep):
        return os.path.relpath(absolute, root) if os.path.isabs(text) or os.getcwd() != root else text
    if not os.path.isabs(text) and not text.startswith("~"):
        return text  # relative to a current folder outside the repository: kept as typed
    shared = os.environ.get("DUPMAE_SHARED_DATA") or os.path.join(os.path.dirname(root), "shared", "data")
    for var, base in (("DUPMAE_SHARED_DATA", shared), ("HOME", os.environ.get("HOME"))):
        base = os.path.abspath(base) if base else None
        if base and base != os.sep and (absolute == base or absolute.startswith(base + os.sep)):
            return f"${var}" + absolute[len(base):]
    parts = Path(absolute).parts[2:]
    return "/".join(("$WORK", *parts))


def _quote(arg: str) -> str:
    """``shlex.quote``, but a ``$PLACEHOLDER`` stays outside the quotes so that the shell expands it."""
    head, sep, tail = arg.partition("$")
    name = re.match(r"[A-Z_]+", tail) if sep else None
    if name is None:
        return shlex.quote(arg)
    rest = tail[name.end():]
    return (shlex.quote(head) if head else "") + "$" + name.group() + (shlex.quote(rest) if rest else "")


def _portable_arg(arg: str) -> str:
    """One argument with its path spelt portably: ``/abs/x``, ``--flag=/abs/x`` or ``name=/abs/x``, and
    each path of a ``+`` mixture of collections (``default+/abs/x``)."""
    key, sep, value = arg.rpartition("=") if "=" in arg else ("", "", arg)
    if "+" in value:
        return key + sep + "+".join(_portable_arg(v) for v in value.split("+"))
    if value.startswith(("/", "~")) and len(value) > 1:
        return key + sep + portable_path(value)
    return arg


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """The one atomic file write: ``write(tmp)`` fills a temporary file in ``path``'s folder, which is
    then renamed onto ``path``; a failed write (disk full) leaves ``path`` as it was and no temporary
    file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file: name the output
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
