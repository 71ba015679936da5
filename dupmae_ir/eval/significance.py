"""Paired significance over queries: the one home of the statistics every comparison of runs prints.

Two systems scored on the same queries give paired per-query values (:func:`dupmae_ir.runs.per_query`);
:func:`paired_test` reports the mean per-query difference (B - A) with its 95% t confidence interval,
the paired t-test (``scipy.stats.ttest_rel``) and a paired randomisation test
(``scipy.stats.permutation_test`` with ``permutation_type='samples'``: each query's two values swapped
at random, i.e. the sign of its difference flipped; exact enumeration when ``2**n`` is at most
``n_resamples``), both two-sided. Smucker, Allan and Carterette (CIKM 2007) compare these tests for IR.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

N_RESAMPLES = 10_000  # randomisation test: Monte Carlo sign flips when 2**n exceeds this
SEED = 0  # fixed: the same runs give the same randomisation p-value
BATCH_VALUES = 4_000_000  # resampled values held at once by the randomisation test (~32 MB per array)
TOLERANCE = 1e-12  # differences this small are rounding, not a difference between systems


@dataclass(frozen=True)
class PairedTest:
    """B against A over ``n`` paired queries. ``delta`` = mean(B - A); ``ci`` its 95% t interval;
    ``p_t``: paired t-test; ``p_rand``: paired randomisation test (``exact``: every sign flip enumerated)."""

    n: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    t: float
    p_t: float
    p_rand: float
    exact: bool

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        """One line: ``Δ +0.0022 [-0.0150, +0.0194], t-test p 0.84, randomisation p 0.84 (n 300)``."""
        return (f"Δ {self.delta:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}], t-test p {format_p(self.p_t)}, "
                f"randomisation p {format_p(self.p_rand)} (n {self.n})")


def format_p(p: float) -> str:
    """A p-value as reports print it: 3 significant digits, ``<0.0001`` below that."""
    if p is None or not math.isfinite(p):
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.3g}"


def paired_test(a: Sequence[float], b: Sequence[float], n_resamples: int = N_RESAMPLES,
                seed: int = SEED) -> PairedTest:
    """Paired tests of B against A (same queries, same order); see the module doc."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values need two 1-d sequences of one length, got {x.shape} and {y.shape}")
    n = len(x)
    if n < 2:
        raise ValueError(f"a paired test needs at least 2 queries, got {n}")
    d = y - x  # (n,) per-query differences
    delta = float(d.mean())
    exact = 2 ** n <= n_resamples
    if np.abs(d).max() <= TOLERANCE:  # identical values: no difference to test (scipy's t would be 0/0)
        return PairedTest(n, float(x.mean()), float(y.mean()), 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, exact)
    if np.ptp(d) <= TOLERANCE:  # one constant non-zero difference: every query moves the same way, no spread
        t, p_t, low, high = math.copysign(math.inf, delta), 0.0, delta, delta
    else:
        res = stats.ttest_rel(y, x)
        ci = res.confidence_interval(0.95)
        t, p_t, low, high = float(res.statistic), float(res.pvalue), float(ci.low), float(ci.high)
    batch = max(1, min(n_resamples, BATCH_VALUES // n))  # bounded memory on large query sets (MS MARCO dev)
    perm = stats.permutation_test((y, x), _mean_difference, permutation_type="samples", vectorized=True,
                                  n_resamples=n_resamples, batch=batch, alternative="two-sided", rng=seed)
    return PairedTest(n, float(x.mean()), float(y.mean()), delta, low, high, t, p_t, float(perm.pvalue), exact)


def _mean_difference(x, y, axis):
    return (x - y).mean(axis=axis)


def compare_per_query(a: dict[str, float], b: dict[str, float], **kw) -> PairedTest:
    """:func:`paired_test` over the queries both ``{qid: value}`` share (sorted by query id)."""
    qids = sorted(a.keys() & b.keys())
    return paired_test([a[q] for q in qids], [b[q] for q in qids], **kw)


def compare_runs(run_a, run_b, qrels: dict[str, dict[str, int]], measure: str = "nDCG@10", **kw) -> PairedTest:
    """B against A on ``measure`` over the judged queries that at least one of the runs holds; a query
    missing from one run counts 0 for it (:func:`dupmae_ir.runs.per_query`)."""
    from ..runs import per_query

    queries = [q for q in qrels if q in run_a or q in run_b]
    return compare_per_query(per_query(run_a, qrels, measure, queries), per_query(run_b, qrels, measure, queries),
                             **kw)


def paired_against(runs: dict, qrels: dict, measure: str, reference: str = "bm25",
                   systems: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Each run of ``systems`` (default: every other run) tested against the run ``reference`` on
    ``measure`` (:func:`compare_runs`); empty without a ``reference`` run."""
    if reference not in runs:
        return {}
    return {system: {"measure": measure, **compare_runs(runs[reference], run, qrels, measure).as_dict()}
            for system, run in runs.items()
            if system != reference and (systems is None or system in systems) and any(q in qrels for q in run)}
