"""Safe outputs: the toolkit replaces only what it wrote itself, only when asked, one writer at a time.

Every output folder kind (an index, encoded queries, a BM25 index, ...) is recognised by the
provenance file the toolkit writes inside it (:class:`OutputKind`). Before any work starts,
:func:`check_output_dir` refuses a path that is a file, a link, a folder the toolkit did not write, a
previous output without ``overwrite``, or a place that cannot be written. :func:`claim_output_dir`
then locks the output (``fcntl`` on a ``.NAME.lock`` file beside it, so a second process fails at
once), removes temporary folders left by dead runs (recognised by a marker file inside them), and
hands out marked temporary folders that :meth:`OutputClaim.commit` renames into place. A replaced
previous output is moved aside (into a marked folder) first and deleted only after the new one is in place.
Output files go through the same claim (:func:`claim_output_file`: lock, check of the file *and* its
sidecar, the pair written under temporary names and renamed file first, sidecar last), and folders a
command fills in place (training) carry :data:`OWNER_MARKER` from their first write (:func:`claim_in_place`).
Leftovers are recognised by their exact name ``.NAME.<label>-<pid>`` *and* a marker naming ``NAME``:
never by a prefix, so the leftovers of ``idx`` are never those of ``idx.v2``, nor a user's ``.idx.old-backup``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import OutputError

TMP_MARKER = ".dupmae-tmp"  # inside every temporary folder the toolkit creates: only those are ever removed
OWNER_MARKER = ".dupmae-output.json"  # first file of a folder a command fills in place (training output)
ASIDE = "output"  # a replaced output, inside its marked ``.NAME.old-<pid>`` folder until the new one is in place
_LEFTOVER = re.compile(r"(?P<label>[a-z]+)-\d+")  # what follows ``.NAME.`` in a temporary folder's name


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


def _check_file(path: Path, is_ours, overwrite: bool, what: str) -> None:
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


def sidecar_path(path: Path) -> Path:
    """``<path>.json``: the provenance written beside an output file."""
    return path.with_name(path.name + ".json")


def check_output_file(path: str | os.PathLike, is_ours, overwrite: bool = False, what: str = "file",
                      sidecar_is_ours=None) -> Path:
    """Validate an output file: refused when it is a folder or a link, exists without ``is_ours(path)``,
    or exists and ``overwrite`` is off. With ``sidecar_is_ours`` its sidecar ``<path>.json`` is checked alike."""
    path = absolute(path)
    _check_file(path, is_ours, overwrite, what)
    if sidecar_is_ours is not None:
        _check_file(sidecar_path(path), sidecar_is_ours, overwrite, f"provenance file of a {what}")
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


def _mark(folder: Path, target: Path) -> None:
    (folder / TMP_MARKER).write_text(json.dumps({"output": target.name, "pid": os.getpid()}) + "\n")


def _marked_for(folder: Path, target: Path) -> bool:
    """Whether ``folder`` is a real folder whose marker says it is a temporary folder of ``target``."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        meta = json.loads((folder / TMP_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("output") == target.name


class _Claim:
    """A locked output path and its marked temporary folders ``.NAME.<label>-<pid>`` beside it."""

    def __init__(self, path: Path, overwrite: bool):
        self.path, self.overwrite = path, overwrite

    def sibling(self, label: str) -> Path:
        """``.NAME.<label>`` beside the output (for example the resumable ``partial`` work folder)."""
        return self.path.with_name(f".{self.path.name}.{label}")

    def temp_dir(self, label: str = "tmp") -> Path:
        """A new, marked temporary folder ``.NAME.<label>-<pid>`` beside the output."""
        if not _LEFTOVER.fullmatch(f"{label}-0"):
            raise ValueError(f"temporary folder label {label!r}: lower-case letters only")
        tmp = self.sibling(f"{label}-{os.getpid()}")
        if _marked_for(tmp, self.path):
            shutil.rmtree(tmp)
        tmp.mkdir()
        _mark(tmp, self.path)
        return tmp

    def _leftovers(self) -> list[tuple[str, Path]]:
        """``(label, folder)`` of this output's temporary folders: exact name and a marker naming it."""
        prefix = f".{self.path.name}."
        found = []
        with os.scandir(self.path.parent) as entries:
            for entry in entries:
                m = _LEFTOVER.fullmatch(entry.name[len(prefix):]) if entry.name.startswith(prefix) else None
                if m and _marked_for(Path(entry.path), self.path):
                    found.append((m["label"], Path(entry.path)))
        return sorted(found)


class OutputClaim(_Claim):
    """A locked output folder: marked temporary folders beside it, and the final rename."""

    def __init__(self, path: Path, spec: OutputKind, overwrite: bool):
        super().__init__(path, overwrite)
        self.spec = spec

    def _clean_leftovers(self) -> None:
        """Under the lock every marked temporary folder of this output is a dead run's: remove it. A
        previous output moved aside by a run that died before its rename is put back."""
        for label, entry in self._leftovers():
            if label == "old" and os.path.lexists(entry / ASIDE) and not os.path.lexists(self.path):
                os.rename(entry / ASIDE, self.path)
            shutil.rmtree(entry)

    def commit(self, tmp: Path) -> Path:
        """Rename the finished temporary folder ``tmp`` to the output path, replacing a previous
        output of the same kind (moved aside, deleted after the rename) or an empty folder."""
        old = None
        state = _state(self.path, self.spec)
        if state == "empty":
            self.path.rmdir()
        elif state == "ours" and self.overwrite:
            old = self.temp_dir("old")
            os.rename(self.path, old / ASIDE)
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


class FileClaim(_Claim):
    """A locked output file and its sidecar ``<file>.json``, always replaced as a pair."""

    def __init__(self, path: Path, overwrite: bool, sidecar: bool):
        super().__init__(path, overwrite)
        self.sidecar = sidecar_path(path) if sidecar else None

    def _clean_leftovers(self) -> None:
        """Remove a dead run's temporary folders; one that died between the pair's two renames (its file
        is in place, its sidecar not) has its sidecar renamed in, so the pair matches again."""
        for label, entry in self._leftovers():
            if label == "tmp" and self.sidecar and not (entry / "file").exists() and (entry / "sidecar").is_file():
                os.replace(entry / "sidecar", self.sidecar)
            shutil.rmtree(entry)

    def write(self, text: str, sidecar_text: str | None = None) -> Path:
        """Write the file and its sidecar in a temporary folder, then rename the file, then the sidecar
        (last): a failure before the renames leaves the earlier pair as it was."""
        if (sidecar_text is None) != (self.sidecar is None):
            raise ValueError("pass sidecar_text exactly when the claim has a sidecar")
        tmp = self.temp_dir()
        try:
            (tmp / "file").write_text(text, encoding="utf-8")
            if sidecar_text is not None:
                (tmp / "sidecar").write_text(sidecar_text, encoding="utf-8")
        except OSError as e:
            remove_temp_dir(tmp)
            raise OutputError(self.path, f"could not be written ({e.strerror or e}); the earlier file, if any, "
                                         "is kept", "free disk space or raise the file-size limit (ulimit -f), "
                                                    "or write elsewhere") from e
        except BaseException:
            remove_temp_dir(tmp)
            raise
        os.replace(tmp / "file", self.path)
        if self.sidecar is not None:
            os.replace(tmp / "sidecar", self.sidecar)
        remove_temp_dir(tmp)
        return self.path


def remove_temp_dir(path: Path) -> None:
    """Remove a temporary folder of the toolkit; refuses (silently keeps) a folder without the marker."""
    if path.is_dir() and not path.is_symlink() and (path / TMP_MARKER).is_file():
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``path`` (a second writer fails at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _Lock(path.with_name(f".{path.name}.lock"), path)
    try:
        yield
    finally:
        lock.release()


@contextmanager
def claim_output_dir(path: str | os.PathLike, spec: OutputKind, overwrite: bool = False) -> Iterator[OutputClaim]:
    """Check ``path`` (:func:`check_output_dir`), lock it for this process and clean a dead run's
    leftovers; the lock is released when the block ends."""
    path = check_output_dir(path, spec, overwrite)
    with _locked(path):
        claim = OutputClaim(path, spec, overwrite)
        claim._clean_leftovers()
        check_output_dir(path, spec, overwrite)  # again, now that nobody else writes it
        yield claim


@contextmanager
def claim_output_file(path: str | os.PathLike, is_ours, overwrite: bool = False, what: str = "file",
                      sidecar_is_ours=None) -> Iterator[FileClaim]:
    """Check an output file and, with ``sidecar_is_ours``, its sidecar ``<path>.json``
    (:func:`check_output_file`), lock it and clean a dead run's leftovers; write it with
    :meth:`FileClaim.write` inside the block. Take it before the work, so a second writer fails at once."""
    path = check_output_file(path, is_ours, overwrite, what, sidecar_is_ours)
    with _locked(path):
        claim = FileClaim(path, overwrite, sidecar_is_ours is not None)
        claim._clean_leftovers()
        check_output_file(path, is_ours, overwrite, what, sidecar_is_ours)  # again, under the lock
        yield claim


def check_in_place(path: str | os.PathLike, spec: OutputKind, again: bool, busy: str, fix: str) -> Path:
    """The checks of :func:`claim_in_place`, writing nothing (to check every output before the first write)."""
    path = absolute(path)
    state = _state(path, spec)
    if state in ("file", "link"):
        raise OutputError(path, f"is a {'symbolic link' if state == 'link' else 'file'}, not a {spec.what} folder",
                          "choose a new folder for the output")
    if state == "foreign":
        raise OutputError(path, f"is a folder that dupmae_ir did not write (it has no {OWNER_MARKER} of a "
                                f"{spec.what}); it is never written into", "choose a new folder for the output")
    if state == "ours" and not again:
        raise OutputError(path, busy, fix)
    _check_parent(path)
    return path


def claim_in_place(path: str | os.PathLike, spec: OutputKind, again: bool, busy: str, fix: str) -> Path:
    """Check a folder a command fills in place over a long run (training) and mark it before any write.

    Refused: a file, a link, a non-empty folder without ``spec``'s marker (:data:`OWNER_MARKER`, or a
    legacy provenance file, naming one of ``spec.kinds``): never written into, whatever the flags; an
    earlier run's folder unless ``again`` (overwrite or resume), with ``busy`` and ``fix`` as the message.
    Then the folder is created and :data:`OWNER_MARKER` written first. Returns the absolute path."""
    path = check_in_place(path, spec, again, busy, fix)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / OWNER_MARKER).is_file():
        from .provenance import atomic_write_text

        atomic_write_text(path / OWNER_MARKER, json.dumps({"kind": spec.kinds[0], "pid": os.getpid()}) + "\n")
    return path


@contextmanager
def atomic_output_dir(path: str | os.PathLike, spec: OutputKind, overwrite: bool = False) -> Iterator[Path]:
    """Claim ``path`` and yield a temporary folder that replaces it on success (see :class:`OutputClaim`)."""
    with claim_output_dir(path, spec, overwrite) as claim, claim.atomic() as tmp:
        yield tmp
