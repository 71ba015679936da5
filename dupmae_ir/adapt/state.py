"""The route's state file ``dupmae_adapt.json`` in its work folder: the run's settings with the fingerprints
of what it reads, and each finished step's settings (its own inputs fingerprinted), outputs and time.

A step whose recorded settings equal the current ones, and whose outputs are still there, is skipped
(:meth:`StepLog.finished`); the file is written through its ownership claim (lock held for the whole run,
atomic rewrites), so a second run of the same folder fails at once."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError
from ..outputs import OWNER_MARKER, OutputKind

STATE_NAME = "dupmae_adapt.json"
KIND = "dupmae_ir.adapt"
ADAPT_OUTPUT = OutputKind("label-free adaptation folder", OWNER_MARKER, (KIND,), legacy=(STATE_NAME,))
INDEXES_OUTPUT = OutputKind("folder of a label-free adaptation's indexes", OWNER_MARKER, (f"{KIND}.indexes",))


def _is_state(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


class StepLog:
    """The state of one work folder: :meth:`check` the run's settings against the recorded ones, then per
    step :meth:`finished` / :meth:`record`. Hold it through :func:`open_state`."""

    def __init__(self, claim, data: dict):
        self.claim, self.data = claim, data

    @property
    def steps(self) -> dict:
        return self.data.setdefault("steps", {})

    def check(self, run: dict, overwrite: bool) -> None:
        """Refuse, without ``overwrite``, a folder whose earlier run had other settings or inputs (its
        finished steps would be replaced); with it, record ``run`` and go on (changed steps are redone)."""
        from ..fingerprint import changes

        old, run = self.data.get("run"), _plain(run)
        if old is not None and old != run and self.steps and not overwrite:
            said = "; ".join(changes(old, run)[:3])
            raise OutputError(self.claim.path.parent, f"holds an adaptation with other settings ({said})",
                              "pass --overwrite to redo the changed steps, or choose another --output")
        self.data["run"] = run
        self.save()

    def finished(self, step: str, settings: dict, outputs: list[Path]) -> bool:
        """Whether ``step`` finished with exactly ``settings`` and its ``outputs`` still exist."""
        done = self.steps.get(step)
        return bool(done and done.get("settings") == _plain(settings) and all(Path(p).exists() for p in outputs))

    def record(self, step: str, settings: dict, outputs: dict, seconds: float) -> None:
        self.steps[step] = {"settings": _plain(settings),
                            "outputs": {k: str(Path(v).resolve()) for k, v in outputs.items()},
                            "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.save()

    def forget(self, step: str) -> None:
        """A step about to be redone is no longer finished (an interruption must not look finished)."""
        if self.steps.pop(step, None) is not None:
            self.save()

    def save(self) -> None:
        from ..provenance import provenance

        self.claim.write(json.dumps(provenance(**{**self.data, "kind": KIND}), indent=2, default=str) + "\n")


def _plain(settings: dict) -> dict:
    """``settings`` as the state file holds them (JSON round trip: tuples become lists, paths strings)."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


@contextmanager
def open_state(out: Path, index_root: Path):
    """The work folder ``out`` and the index folder ``index_root`` checked, then marked
    (:func:`~dupmae_ir.outputs.claim_in_place`: a folder the toolkit did not write is refused, nothing
    written before both pass), the state file claimed and read; yields the :class:`StepLog`."""
    from ..outputs import check_in_place, claim_in_place, claim_output_file

    for path, spec in ((out, ADAPT_OUTPUT), (index_root, INDEXES_OUTPUT)):
        check_in_place(path, spec, True, "", "")
    claim_in_place(index_root, INDEXES_OUTPUT, True, "", "")
    out = claim_in_place(out, ADAPT_OUTPUT, True, "", "")
    path = out / STATE_NAME
    with claim_output_file(path, _is_state, overwrite=True, what="adaptation state file") as claim:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        data = {k: v for k, v in data.items() if k in ("run", "steps")}
        yield StepLog(claim, data)
