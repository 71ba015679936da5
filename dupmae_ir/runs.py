"""Runs: the one home of hit lists, fusion, TREC run files and scoring with ir-measures.

A run is ``{qid: [(docid, score), ...]}`` best first (:data:`Run`); ir-measures and BEIR use
``{qid: {docid: score}}`` (:func:`to_ir_measures`).

Fusion (:func:`fuse`) follows Pyserini's ``HybridSearcher`` exactly (union of both top-``depth``
lists; a document missing from one side gets that side's minimum score), so its runs equal
``python -m pyserini.search.hybrid`` with ``fusion --alpha``; it adds deterministic tie-breaking (score
descending, then docid ascending) where Pyserini's order of tied hits depends on ``PYTHONHASHSEED``.
``sum``: ``alpha * sparse + dense`` (DupMAE's score with ``alpha = 1/(s_q*s_d)``); ``normalized``:
Pyserini's ``--normalization`` (each side centred on its (min+max)/2 and divided by its range), then
the same sum; ``rrf``: reciprocal-rank fusion ``sum 1/(rrf_k + rank)``.

Scoring (:func:`score_run`) follows pytrec_eval and BEIR: the mean is over the judged queries that
were run (a run query with no hits scores 0); judged queries that were not run and run queries
without judgements are counted and reported, never averaged in.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import DataError

Hit = tuple[str, float]  # (docid, score)
Run = dict[str, list[Hit]]  # qid -> hits, best first
MODES = ("dense", "impact", "hybrid")  # what a DupMAE model retrieves with: FAISS, Lucene impacts, both fused
# the hybrid run fused with a BM25 run as stock `python -m pyserini.fusion --method normalize` does
HYBRID_BM25 = "hybrid+bm25"
SEARCH_MODES = (*MODES, HYBRID_BM25)
FUSIONS = ("sum", "normalized", "rrf")
RUN_ARTIFACT = "trec_run"
_WHITESPACE = re.compile(r"\s")


def rank_hits(scores: dict[str, float], k: int | None = None) -> list[Hit]:
    """``{docid: score}`` -> hits sorted by score descending, ties broken by docid ascending."""
    hits = sorted(scores.items(), key=lambda h: (-h[1], h[0]))
    return hits if k is None else hits[:k]


@dataclass(frozen=True)
class FusionConfig:
    """How dense and sparse lists combine. ``alpha=None`` means: the fusion's default (``sum``:
    ``1/(s_q*s_d)`` from the index, ``normalized``: 1.0)."""

    fusion: str = "sum"
    alpha: float | None = None
    weight_on_dense: bool = False  # Pyserini's --weight-on-dense: sparse + alpha * dense
    rrf_k: int = 60

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion={self.fusion!r}; valid: {FUSIONS}")
        if self.rrf_k < 0:
            raise ValueError(f"rrf_k={self.rrf_k} must be >= 0")

    def alpha_for(self, index_alpha: float) -> float:
        """The sparse weight in use: explicit ``alpha``, else ``1/(s_q*s_d)`` for ``sum``, else 1."""
        if self.alpha is not None:
            return self.alpha
        return index_alpha if self.fusion == "sum" else 1.0


def fuse(dense: Sequence[Hit], sparse: Sequence[Hit], k: int, fusion: str = "sum", alpha: float = 1.0,
         weight_on_dense: bool = False, rrf_k: int = 60) -> list[Hit]:
    """Fuse a dense and a sparse hit list of one query into the top ``k`` (see the module doc)."""
    if fusion == "rrf":
        scores: dict[str, float] = {}
        for hits in (dense, sparse):
            for rank, (docid, _) in enumerate(hits, start=1):
                scores[docid] = scores.get(docid, 0.0) + 1.0 / (rrf_k + rank)
        return rank_hits(scores, k)
    if fusion not in ("sum", "normalized"):
        raise ValueError(f"fusion={fusion!r}; valid: {FUSIONS}")
    d = dict(dense)
    s = dict(sparse)
    d_min, d_max = (min(d.values()), max(d.values())) if d else (0.0, 1.0)
    s_min, s_max = (min(s.values()), max(s.values())) if s else (0.0, 1.0)
    scores = {}
    for docid in d.keys() | s.keys():
        ds = d.get(docid, d_min)
        ss = s.get(docid, s_min)
        if fusion == "normalized":
            # Pyserini divides by (max - min) unguarded; a one-hit side would divide by zero there.
            ss = (ss - (s_min + s_max) / 2) / ((s_max - s_min) or 1.0)
            ds = (ds - (d_min + d_max) / 2) / ((d_max - d_min) or 1.0)
        scores[docid] = ss + alpha * ds if weight_on_dense else alpha * ss + ds
    return rank_hits(scores, k)


def fuse_normalize(runs: Sequence[Sequence[Hit]], k: int, depth: int | None = None) -> list[Hit]:
    """One query's hit lists fused as stock ``python -m pyserini.fusion --method normalize`` does: each
    list min-max normalised to [0, 1] (a constant list to 1), the first ``depth`` of each summed (a
    missing document adds 0), top ``k``, ties by docid ascending."""
    scores: dict[str, float] = {}
    for hits in runs:
        if not hits:
            continue
        lo, hi = min(s for _, s in hits), max(s for _, s in hits)
        for docid, score in hits[:depth]:
            scores[docid] = scores.get(docid, 0.0) + ((score - lo) / (hi - lo) if hi > lo else 1.0)
    return rank_hits(scores, k)


# ------------------------------------------------------------------------------------------------
# TREC run files
# ------------------------------------------------------------------------------------------------
def _check_field(value: str, what: str, path: Path) -> None:
    if not value or _WHITESPACE.search(value):
        raise DataError(path, f"refusing to write a run line whose {what} {value!r} is empty or holds whitespace "
                              "(it would not have exactly 6 fields)", "remove whitespace from ids and the tag")


def is_run_sidecar(path: Path) -> bool:
    """Whether ``path`` is the provenance ``<run>.json`` the toolkit writes beside a run."""
    import json

    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("artifact") == RUN_ARTIFACT


def is_run_file(path: Path) -> bool:
    """Whether ``path`` is a run written by the toolkit (its ``<path>.json`` provenance says so)."""
    return is_run_sidecar(path.with_name(path.name + ".json"))


def claim_run_file(path: str | os.PathLike, overwrite: bool = False):
    """Check and lock a run file and its sidecar ``<path>.json`` (:func:`dupmae_ir.outputs.claim_output_file`);
    take it before the work and pass it to :func:`write_trec`, so a second writer fails at once."""
    from .outputs import claim_output_file

    return claim_output_file(path, is_run_file, overwrite, what="run file", sidecar_is_ours=is_run_sidecar)


def write_trec(path: str | os.PathLike, run: Run, tag: str, provenance_info: dict | None = None,
               overwrite: bool = False, claim=None) -> Path:
    """Write a TREC run (``qid Q0 docid rank score tag``, 6 decimals as Pyserini) and ``<path>.json``
    provenance beside it, as a pair (run renamed in first, sidecar last: a failure keeps the earlier pair).
    An existing run or sidecar is replaced only when the toolkit wrote it and ``overwrite`` is on; a
    line that would not have exactly 6 fields is refused. ``claim``: from :func:`claim_run_file`
    (taken here when None)."""
    import json

    from .provenance import provenance

    if claim is None:
        with claim_run_file(path, overwrite) as claim:
            return write_trec(path, run, tag, provenance_info, overwrite, claim)
    path = claim.path
    _check_field(tag, "tag", path)
    seen: set[str] = set()
    lines = []
    for qid, hits in run.items():
        _check_field(qid, "query id", path)
        for rank, (docid, score) in enumerate(hits, start=1):
            if docid not in seen:
                _check_field(docid, "document id", path)
                seen.add(docid)
            lines.append(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    meta = provenance(artifact=RUN_ARTIFACT, run=str(path), tag=tag, queries=len(run), **(provenance_info or {}))
    return claim.write("".join(lines), json.dumps(meta, indent=2, default=str) + "\n")


def read_trec(path: str | os.PathLike) -> Run:
    """Read a TREC run into ``{qid: [(docid, score), ...]}`` in file order."""
    from .data.readers import iter_lines

    run: Run = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise DataError(f"{path}:{lineno}", f"expected 'qid Q0 docid rank score tag', found {len(parts)} fields",
                            "one hit per line, six whitespace-separated fields")
        try:
            score = float(parts[4])
        except ValueError:
            raise DataError(f"{path}:{lineno}", f"score {parts[4]!r} is not a number",
                            "write scores as numbers") from None
        run.setdefault(parts[0], []).append((parts[2], score))
    return run


def to_ir_measures(run: Run) -> dict[str, dict[str, float]]:
    """``{qid: [(docid, score)]}`` -> ir-measures' ``{qid: {docid: score}}`` (a new dict)."""
    return {q: {d: s for d, s in hits} for q, hits in run.items()}


# ------------------------------------------------------------------------------------------------
# scoring
# ------------------------------------------------------------------------------------------------
@dataclass
class Scores:
    """Aggregate measures and which queries they cover."""

    values: dict[str, float]
    scored_queries: int
    judged_not_run: list[str] = field(default_factory=list)  # judged queries absent from the run (no text)
    run_not_judged: list[str] = field(default_factory=list)  # run queries without judgements

    def coverage(self) -> dict:
        return {"scored_queries": self.scored_queries, "judged_queries_not_run": len(self.judged_not_run),
                "run_queries_not_judged": len(self.run_not_judged)}

    def warning(self) -> str | None:
        """A sentence for the user when the run and the qrels do not cover the same queries."""
        parts = []
        if self.judged_not_run:
            parts.append(f"{len(self.judged_not_run)} judged quer{'y' if len(self.judged_not_run) == 1 else 'ies'} "
                         f"not run (no query text), e.g. {self.judged_not_run[0]!r}")
        if self.run_not_judged:
            parts.append(f"{len(self.run_not_judged)} run quer{'y' if len(self.run_not_judged) == 1 else 'ies'} "
                         f"without judgements, e.g. {self.run_not_judged[0]!r}")
        if not parts:
            return None
        return "; ".join(parts) + f": left out of the mean over {self.scored_queries} queries (pytrec_eval/BEIR)"


def score_run(run: Run, qrels: dict[str, dict[str, int]], measures: Sequence[str]) -> Scores:
    """Mean of each ir-measures measure over the judged queries that were run (see the module doc)."""
    import ir_measures

    parsed = [ir_measures.parse_measure(m) for m in measures]
    judged = {q: qrels[q] for q in qrels if q in run}
    agg = ir_measures.calc_aggregate(parsed, judged, to_ir_measures(run)) if judged else {}
    return Scores({m: float(agg.get(p, 0.0)) for m, p in zip(measures, parsed)}, len(judged),
                  sorted(q for q in qrels if q not in run), sorted(q for q in run if q not in qrels))


def ndcg_recall(run: Run, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10 and R@100 (:func:`score_run`), rounded to 4 decimals: the recipe's and the benches' table."""
    return {m: round(v, 4) for m, v in score_run(run, qrels, ("nDCG@10", "R@100")).values.items()}


def per_query(run: Run, qrels: dict[str, dict[str, int]], measure: str,
              queries: Sequence[str] | None = None) -> dict[str, float]:
    """``{qid: value}`` of one ir-measures measure for each judged query in ``queries`` (default: the
    judged queries the run holds); a query absent from the run, or with no hits, scores 0."""
    import ir_measures

    queries = [q for q in qrels if q in run] if queries is None else [q for q in queries if q in qrels]
    parsed = ir_measures.parse_measure(measure)
    judged = {q: qrels[q] for q in queries}
    values = dict.fromkeys(queries, 0.0)
    ran = to_ir_measures({q: run[q] for q in queries if run.get(q)})
    for m in ir_measures.iter_calc([parsed], judged, ran) if ran else ():
        values[m.query_id] = float(m.value)
    return values
