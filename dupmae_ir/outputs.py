"""Safe outputs: the toolkit replaces only what it wrote itself, only when asked, one writer at a time.

Every output folder kind (an index, encoded queries, a BM25 index, ...) is recognised by the
provenance file the toolkit writes inside it (:class:`OutputKind`). Before any work starts,
:func:`check_output_dir` refuses a path that is a file, a link, a folder the toolkit did not write, a
previous output without ``overwrite``, or a place that cannot be written. :func:`claim_output_dir`
then locks the output (``fcntl`` on a ``.NAME.lock`` file beside it, so a second process fails at
once), removes temporary folders left by dead runs (recognised by a marker file inside them), and
hands out marked temporary folders that :meth:`OutputClaim.commit` renames into place. A replaced
previous output is moved aside first and deleted only after the new one is in place.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import OutputError

TMP_MARKER = ".dupmae-tmp"  # inside every temporary folder the toolkit creates: only those are ever removed


@dataclass(frozen=True)
class OutputKind:
    """An output folder kind: ``marker`` is the provenance file inside it, whose ``kind`` (or
    ``artifact``) field holds one of ``kinds``; ``legacy`` names other files that marked it before."""

    what: str
    marker: str
    kinds: tuple[str, ...]
    legacy: tuple[str, ...] = ()

    def __post_init__(self):
        _KINDS.append(self)  # known kinds, to name another command's output in an error


_KINDS: list[OutputKind] = []


def absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute with ``..`` resolved, but symbolic links kept (never followed)."""
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def is_output(folder: Path, spec: OutputKind) -> bool:
    """Whether ``folder`` holds ``spec.marker`` (or a legacy marker) naming one of ``spec.kinds``."""
    for name in (spec.marker, *spec.legacy):
        try:
            meta = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and (meta.get("kind") in spec.kinds or meta.get("artifact") in spec.kinds):
            return True
    return False


def _state(path: Path, spec: OutputKind) -> str:
    """absent | empty | ours | foreign | file | link."""
    if path.is_symlink():
        return "link"
    if not path.exists():
        return "absent"
    if not path.is_dir():
        return "file"
    with os.scandir(path) as entries:
        if next(entries, None) is None:
            return "empty"
    return "ours" if is_output(path, spec) else "foreign"


def _check_parent(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a folder this process may write in."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(path, f"{ancestor} is a file, so nothing can be created under it",
                          "choose a path whose parent folders are folders")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(path, f"the folder {ancestor} is not writable", "choose a path you may write to")


def check_output_dir(path: str | os.PathLike, spec: OutputKind, overwrite: bool = False) -> Path:
    """Validate an output folder before any work starts; return it absolute. Raises :class:`OutputError`."""
    path = absolute(path)
    if path == path.parent:
        raise OutputError(path, "is the root of the file system", "choose a new folder for the output")
    state = _state(path, spec)
    if state == "file":
        raise OutputError(path, f"exists and is a file, not a {spec.what} folder",
                          "choose a folder path for the output")
    if state == "link":
        raise OutputError(path, "is a symbolic link; dupmae_ir never replaces links",
                          "pass the real folder's path, or a new path")
    other = next((k for k in _KINDS if state == "foreign" and k != spec and is_output(path, k)), None)
    if other is not None:
        raise OutputError(path, f"holds a {other.what} written by dupmae_ir, not a {spec.what}; one kind of output "
                                "never replaces another", "choose a new path for the output")
    if state == "foreign":
        raise OutputError(path, f"is an existing folder that dupmae_ir did not write (it has no {spec.marker} of a "
                                f"{spec.what}); it is never replaced or deleted", "choose a new path for the output")
    if state == "ours" and not overwrite:
        raise OutputError(path, f"already holds a {spec.what} from an earlier run",
                          "pass --overwrite to replace it, or choose another output path")
    _check_parent(path)
    return path


def check_output_file(path: str | os.PathLike, is_ours, overwrite: bool = False, what: str = "file") -> Path:
    """Validate an output file: refused when it is a folder, exists without ``is_ours(path)``, or
    exists and ``overwrite`` is off."""
    path = absolute(path)
    if path.is_dir() or path.is_symlink():
        raise OutputError(path, f"is a {'symbolic link' if path.is_symlink() else 'folder'}, not a {what}",
                          "choose a file path for the output")
    if path.exists():
        if not is_ours(path):
            raise OutputError(path, "exists and was not written by dupmae_ir; it is never overwritten",
                              "choose a new path for the output")
        if not overwrite:
            raise OutputError(path, f"already holds a {what} from an earlier run",
                              "pass --overwrite to replace it, or choose another output path")
    _check_parent(path)
    return path


class _Lock:
    """An exclusive ``fcntl.flock`` on ``path``; the holder's pid is written inside for the message."""

    def __init__(self, path: Path, target: Path):
        import fcntl

        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputError(target, f"another process (pid {holder}) is writing this output now",
                                  "wait for it to finish, or choose another output path") from None
            try:  # a finishing holder may have unlinked the file between our open and flock: retry
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd, self.path = fd, path

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


class OutputClaim:
    """A locked output folder: marked temporary folders beside it, and the final rename."""

    def __init__(self, path: Path, spec: OutputKind, overwrite: bool):
        self.path, self.spec, self.overwrite = path, spec, overwrite
        self._prefix = f".{path.name}."

    def sibling(self, label: str) -> Path:
        """``.NAME.<label>`` beside the output (for example the resumable ``partial`` work folder)."""
        return self.path.with_name(f"{self._prefix}{label}")

    def temp_dir(self, label: str = "tmp") -> Path:
        """A new, marked temporary folder ``.NAME.<label>-<pid>`` beside the output."""
        tmp = self.sibling(f"{label}-{os.getpid()}")
        if tmp.exists():
            remove_temp_dir(tmp)
        tmp.mkdir()
        (tmp / TMP_MARKER).write_text(f"{os.getpid()}\n")
        return tmp

    def _clean_leftovers(self) -> None:
        """Under the lock every marked temporary folder of this output is a dead run's: remove it. A
        previous output moved aside by a run that died before its rename is put back."""
        for entry in sorted(self.path.parent.glob(f"{self._prefix}*")):
            if not entry.is_dir() or entry.is_symlink():
                continue
            label = entry.name[len(self._prefix):]
            if label.startswith("old-") and is_output(entry, self.spec):
                if not os.path.lexists(self.path):
                    os.rename(entry, self.path)
                else:
                    shutil.rmtree(entry)
            elif (entry / TMP_MARKER).is_file():
                shutil.rmtree(entry)

    def commit(self, tmp: Path) -> Path:
        """Rename the finished temporary folder ``tmp`` to the output path, replacing a previous
        output of the same kind (moved aside, deleted after the rename) or an empty folder."""
        old = None
        state = _state(self.path, self.spec)
        if state == "empty":
            self.path.rmdir()
        elif state == "ours" and self.overwrite:
            old = self.sibling(f"old-{os.getpid()}")
            os.rename(self.path, old)
        elif state != "absent":
            raise OutputError(self.path, "changed while this run was writing (it is no longer empty or a previous "
                                         f"{self.spec.what}); nothing was replaced",
                              f"the new {self.spec.what} is in {tmp}: move it yourself")
        (tmp / TMP_MARKER).unlink()
        os.rename(tmp, self.path)
        if old is not None:
            shutil.rmtree(old)
        return self.path

    @contextmanager
    def atomic(self) -> Iterator[Path]:
        """A temporary folder that becomes the output on success and is removed on failure."""
        tmp = self.temp_dir()
        try:
            yield tmp
        except BaseException:
            remove_temp_dir(tmp)
            raise
        self.commit(tmp)


def remove_temp_dir(path: Path) -> None:
    """Remove a temporary folder of the toolkit; refuses (silently keeps) a folder without the marker."""
    if path.is_dir() and not path.is_symlink() and (path / TMP_MARKER).is_file():
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def claim_output_dir(path: str | os.PathLike, spec: OutputKind, overwrite: bool = False) -> Iterator[OutputClaim]:
    """Check ``path`` (:func:`check_output_dir`), lock it for this process and clean a dead run's
    leftovers; the lock is released when the block ends."""
    path = check_output_dir(path, spec, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _Lock(path.with_name(f".{path.name}.lock"), path)
    try:
        claim = OutputClaim(path, spec, overwrite)
        claim._clean_leftovers()
        check_output_dir(path, spec, overwrite)  # again, now that nobody else writes it
        yield claim
    finally:
        lock.release()


@contextmanager
def atomic_output_dir(path: str | os.PathLike, spec: OutputKind, overwrite: bool = False) -> Iterator[Path]:
    """Claim ``path`` and yield a temporary folder that replaces it on success (see :class:`OutputClaim`)."""
    with claim_output_dir(path, spec, overwrite) as claim, claim.atomic() as tmp:
        yield tmp
