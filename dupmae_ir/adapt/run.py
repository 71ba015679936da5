"""One run of the route: inputs checked before any work, the work and index folders claimed, then the
steps (:mod:`.steps`) in order, each skipped when it finished earlier with the same settings (:mod:`.state`)."""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import SERVED_MODE, AdaptConfig


@dataclass
class Summary:
    """What the run wrote, where, and the command that serves it."""

    checkpoint: Path
    index: Path
    bm25_index: Path
    work: Path
    search_command: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


class Adaptation:
    """The label-free route on ``cfg`` (:class:`~.config.AdaptConfig`); :meth:`run` returns a :class:`Summary`.
    ``overwrite``: redo the steps whose settings changed since an earlier run of the same work folder."""

    def __init__(self, cfg: AdaptConfig, overwrite: bool = False):
        self.cfg, self.overwrite = cfg, overwrite
        self.log = self.ctx = self.coll = None
        self.inputs: dict = {}
        self.doc_list: list = []
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def check(self):
        """Every input checked before any folder is written or a model loaded; returns the collection."""
        from ..data import DataError, resolve
        from ..errors import UserError
        from ..fingerprint import checkpoint_fingerprint
        from ..modeling.backbone import check_checkpoint
        from ..outputs import absolute

        cfg = self.cfg
        if absolute(cfg.out) == absolute(cfg.index_root):
            raise UserError("--indexes", "is the same folder as --output", "pass another folder for the indexes")
        if cfg.pseudo_queries < cfg.batch_size:
            raise UserError("--pseudo-queries", f"{cfg.pseudo_queries} is fewer than one batch ({cfg.batch_size})",
                            "raise --pseudo-queries or lower --batch-size")
        if cfg.teacher_depth < 2:
            raise UserError("--teacher-depth", "must be >= 2 (the source and at least one other document)",
                            "pass e.g. --teacher-depth 30")
        coll = resolve(cfg.corpus, data_dir=cfg.data_dir)
        if not coll.has_corpus():
            raise DataError(cfg.corpus, "has no documents to adapt to", "pass a BEIR folder or a JSONL collection")
        for flag, path in (("--checkpoint", cfg.checkpoint), ("--teacher-backbone", cfg.teacher_backbone)):
            try:
                found = check_checkpoint(path, doc_max_length=cfg.doc_max_length)
            except UserError as e:
                raise UserError(flag, str(e)) from None
            if found is None and "name" in checkpoint_fingerprint(path):  # neither a folder nor a cached hub id
                raise UserError(flag, f"{path!r} is not a checkpoint folder, nor a model in the local Hugging Face "
                                      "cache", "pass a checkpoint folder, 'default', or a hub id downloaded before")
        return coll

    def run(self) -> Summary:
        import torch

        from ..data import doc_text
        from ..fingerprint import corpus_fingerprint, fingerprint_id
        from ..recipe.config import RecipePaths
        from ..recipe.state import Context, Inputs, Results, precisions
        from .state import open_state
        from .steps import (
            bm25_index,
            checkpoint_id,
            finetune,
            index,
            interpolate,
            materialise_start,
            pretrain,
            pseudo_queries,
            teacher,
        )

        cfg = self.cfg
        coll = self.check()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        with open_state(cfg.out, cfg.index_root) as log:
            self.log, self.coll = log, coll
            self.inputs = {"corpus": fingerprint_id(corpus_fingerprint(coll)),
                           "checkpoint": checkpoint_id(cfg.checkpoint),
                           "teacher": checkpoint_id(cfg.teacher_backbone)}
            log.check({"config": cfg.flat(), "inputs": self.inputs}, self.overwrite)
            self.doc_list = list(coll.iter_docs())
            rc = cfg.recipe().replace(corpus=coll.reference)
            out = cfg.out
            paths = RecipePaths(out, out.name, cfg.index_root, out / "runs", out / "report")
            docs = {d.id: doc_text(d) for d in self.doc_list}
            self.ctx = Context(rc, paths, Inputs(coll, {}, {}, {}, {}, docs, *precisions(rc)), Results(), cfg.progress,
                               overwrite=True)

            start = pretrain(self) if cfg.pretrain_steps else cfg.checkpoint
            start = materialise_start(self, start)
            pseudo = pseudo_queries(self)
            bm25 = bm25_index(self)
            teacher = teacher(self, pseudo, bm25)
            finetuned = finetune(self, start, pseudo, teacher)
            adapted = interpolate(self, start, finetuned)
            index = index(self, adapted, bm25)
        files = {name: Path(p) for s in log.steps.values() for name, p in s["outputs"].items()}
        return Summary(adapted, index, bm25, cfg.out, self.search_command(), self.ran, self.skipped,
                       {**files, "state": cfg.out / "dupmae_adapt.json"})

    def step(self, name: str, settings: dict, outputs: dict, work) -> None:
        """Run ``work()`` unless ``name`` finished earlier with ``settings`` and its ``outputs`` exist; record it."""
        if self.log.finished(name, settings, list(outputs.values())):
            print(f"[adapt] {name}: finished earlier with these settings, skipped", flush=True)
            self.skipped.append(name)
            return
        self.log.forget(name)
        print(f"[adapt] {name} ...", flush=True)
        start = time.time()
        work()
        self.log.record(name, settings, outputs, time.time() - start)
        self.ran.append(name)
        print(f"[adapt] {name}: {time.time() - start:.0f}s", flush=True)

    def search_command(self, topics: str = "QUERIES") -> str:
        """The documented way to serve the route's indexes: ``dupmae_ir.search`` in ``hybrid+bm25`` mode."""
        root = self.cfg.index_root
        return shlex.join(["python", "-m", "dupmae_ir.search", "--index", str(root / "dupmae"), "--bm25-index",
                           str(root / "bm25"), "--mode", SERVED_MODE, "--topics", topics])
