"""A dev split carved from training queries, for every choice a recipe or a study makes.

Test splits are for final tables only; settings (learning rate, calibration, query pruning, ...) are
chosen on a seeded part of the training queries that the model under selection does not train on.
"""
from __future__ import annotations

import random
from collections.abc import Iterable

DEV_FRACTION = 0.2
DEV_SEED = 13


def carve_dev(qids: Iterable[str], fraction: float = DEV_FRACTION, seed: int = DEV_SEED) -> tuple[list[str], list[str]]:
    """``(fit, dev)``: a deterministic split of ``qids`` (sorted, then shuffled by ``seed``); ``dev`` holds
    ``round(fraction * n)`` of them. The same ids, fraction and seed always give the same split."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction={fraction}: must be in [0, 1)")
    ordered = sorted(set(qids))
    random.Random(seed).shuffle(ordered)
    n_dev = round(fraction * len(ordered))
    dev = set(ordered[:n_dev])
    return [q for q in sorted(set(qids)) if q not in dev], sorted(dev)


def judged_qids(queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> list[str]:
    """The queries with at least one judged positive (rel > 0): the ones training and selection use."""
    return [q for q in queries if any(r > 0 for r in qrels.get(q, {}).values())]


def dev_split(collection, split: str = "train", fraction: float = DEV_FRACTION, seed: int = DEV_SEED):
    """``(dev_queries, dev_qrels)`` of a collection's training split: the queries fine-tuning with
    ``holdout_fraction=fraction, holdout_seed=seed`` leaves out."""
    queries, qrels = collection.queries(split), collection.qrels(split)
    dev = carve_dev(judged_qids(queries, qrels), fraction, seed)[1]
    return {q: queries[q] for q in dev}, {q: qrels[q] for q in dev}
