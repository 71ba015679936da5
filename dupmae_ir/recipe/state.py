"""One recipe run's state, passed to every step (:mod:`.steps`): what it reads (:class:`Inputs`, fixed once
the run starts), what it has produced so far (:class:`Results`), and both with the config (:class:`Context`)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .config import RecipeConfig, RecipePaths
from .rows import Row


@dataclass(frozen=True)
class Inputs:
    """The collection, its queries and documents, and the precisions, resolved once per run."""

    coll: object  # dupmae_ir.data collection
    queries: dict[str, str]  # test queries ({} in a selection run)
    qrels: dict
    dev_queries: dict[str, str]  # the held-out dev part of the training queries ({} without one)
    dev_qrels: dict
    docs: dict[str, str]  # id -> the text every model encodes
    training_precision: str  # fp32 | bf16: what "auto" resolved to
    eval_precision: str  # of encoding for evaluation and mining, as encode --dtype takes it (fp32 | bf16)

    @classmethod
    def load(cls, cfg: RecipeConfig, coll, precisions: tuple) -> Inputs:
        """Read ``coll`` (the resolved ``cfg.data.corpus``; its test split only when ``cfg.data.test``);
        ``precisions``: :func:`precisions`."""
        from ..data import doc_text
        from ..data.splits import dev_split

        data, ft = cfg.data, cfg.finetune
        if data.test:
            queries, qrels = coll.queries(data.test_split), coll.qrels(data.test_split)
        else:
            queries, qrels = {}, {}
            if not ft.holdout_fraction:
                raise ValueError("a selection run (test=False) needs holdout_fraction > 0: it reports the dev split")
        dev_queries, dev_qrels = (dev_split(coll, data.train_split, ft.holdout_fraction, ft.holdout_seed)
                                  if ft.holdout_fraction else ({}, {}))
        docs = {d.id: doc_text(d) for d in coll.iter_docs()}
        return cls(coll, queries, qrels, dev_queries, dev_qrels, docs, *precisions)


def precisions(cfg: RecipeConfig) -> tuple[str, str]:
    """``(training precision, evaluation precision)``: what ``auto`` resolves to on this machine."""
    from ..precision import default_device, resolve_dtype, training_precision

    eval_dtype = resolve_dtype(cfg.eval.eval_precision, str(default_device()))  # what encode --dtype resolves
    return training_precision(cfg.training.precision), eval_dtype


@dataclass
class Results:
    """What the run has produced: the table's rows (test, dev), the grounded shares, the comparisons, the
    wall time per step, the files written and the stock Pyserini command."""

    rows: list[Row] = field(default_factory=list)
    dev_rows: list[Row] = field(default_factory=list)
    grounding: dict[str, dict] = field(default_factory=dict)  # model label -> grounded share of its queries
    comparisons: list[dict] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    stock_command: str = ""
    load_start: tuple = ()
    load_end: tuple = ()


@dataclass
class Context:
    """Everything a step reads and writes."""

    cfg: RecipeConfig
    paths: RecipePaths
    inputs: Inputs
    results: Results
    progress: bool = True
    overwrite: bool = False

    @contextmanager
    def timed(self, name: str):
        """Time a step into ``results.times``, printing its start and end."""
        start = time.time()
        print(f"[recipe] {name} ...", flush=True)
        yield
        self.results.times[name] = round(time.time() - start, 1)
        print(f"[recipe] {name}: {self.results.times[name]:.0f}s", flush=True)
