"""A teacher without labels: BM25 fused with the untouched backbone (mean pooling, exhaustive in-memory
scoring) by normalised fusion (:func:`dupmae_ir.runs.fuse_normalize`, Pyserini's ``--method normalize``),
the simple system the toolkit's models must beat out of domain. Each pseudo-query's top ``depth`` with its
fused score is the stage-3 teacher file (lines ``qid docid score``,
:func:`dupmae_ir.data.training.read_teacher_scores`)."""
from __future__ import annotations

import json
from pathlib import Path

from ..runs import Hit, Run, fuse_normalize

TEACHER_KIND = "dupmae_ir.adapt.teacher"


def teacher_run(bm25: Run, backbone: Run, sources: dict[str, str], depth: int) -> tuple[Run, list[str]]:
    """``(run, added)``: each query's top ``depth`` of the normalised fusion of its ``bm25`` and ``backbone``
    hits. A source document (the query's positive by construction) the fusion missed is added with the
    list's top score (the distillation's group needs it; nothing ranks it below the teacher's best);
    ``added`` names those queries."""
    run: Run = {}
    added = []
    for q, doc in sources.items():
        hits: list[Hit] = fuse_normalize([bm25.get(q, []), backbone.get(q, [])], depth)
        if doc not in {d for d, _ in hits}:
            hits = [(doc, hits[0][1] if hits else 1.0), *hits[:depth - 1]]
            added.append(q)
        run[q] = hits
    return run, added


def teacher_lines(run: Run) -> str:
    """The teacher file's text: ``qid docid score`` per line, best first."""
    return "".join(f"{q} {d} {s:.6f}\n" for q, hits in run.items() for d, s in hits)


def is_teacher_file(path: Path) -> bool:
    """Whether ``path`` is a teacher file of the route: its sidecar ``<path>.json`` says so."""
    from ..outputs import sidecar_path

    return is_teacher_sidecar(sidecar_path(path))


def is_teacher_sidecar(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") == TEACHER_KIND
    except (OSError, ValueError, AttributeError):
        return False


def source_ranks(run: Run, sources: dict[str, str]) -> dict[str, int]:
    """Each query's rank (1 = first) of its source document in ``run``; 0 when absent."""
    return {q: next((i for i, (d, _) in enumerate(run.get(q, []), 1) if d == doc), 0) for q, doc in sources.items()}
