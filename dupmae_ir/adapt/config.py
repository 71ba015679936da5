"""The label-free route's settings (:class:`AdaptConfig`) and the recipe config its shared steps read.

The route reuses the recipe's steps (:func:`dupmae_ir.recipe.steps.pretrain`, :func:`~dupmae_ir.recipe.steps.exact`)
and its mapping onto the training dataclasses (:func:`dupmae_ir.recipe.config.training_arguments`): the
settings the two share are handed over as a :class:`~dupmae_ir.recipe.config.RecipeConfig`
(:meth:`AdaptConfig.recipe`), so no training field is copied by hand.

Defaults were NOT chosen on any test split (nor measured on a dev split yet): each is a conservative
reading of the literature or of the recipe, written beside it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

SERVED_MODE = "hybrid+bm25"  # the fusion the route records in its index and prints (dupmae_ir.search --mode)


@dataclass(frozen=True)
class AdaptConfig:
    """One run of the route: ``corpus`` (a local BEIR folder, JSONL collection or id) adapted from
    ``checkpoint`` into ``output`` (work folder, adapted checkpoint in ``output/adapted``) and ``indexes``
    (``dupmae/`` FAISS + impact index, ``bm25/`` the Lucene BM25 index the served fusion needs)."""

    corpus: str
    checkpoint: str
    output: str
    indexes: str | None = None  # None: indexes/<output's name>
    data_dir: str | None = None
    # 0: no pre-training (DupMAE pre-training on nfcorpus gave +0.003 to the fusion, eval/transfer-nfcorpus-dapt.md)
    pretrain_steps: int = 0
    pretrain_lr: float = 2e-5  # gentle: the target's documents adapt the start, they do not retrain it
    pseudo_queries: int = 1000  # ~60 steps at batch 16: minutes on a CPU
    query_words: int = 16  # a title or a first sentence cut to this many words (queries are short)
    teacher_backbone: str = "default"  # the untouched backbone fused with BM25 (mean pooling)
    teacher_depth: int = 30
    # fused teacher scores lie in [0, 2]: at 0.2 the top of the list outweighs its bottom by e^10
    teacher_temperature: float = 0.2
    lr: float = 1e-5  # half the paper's 2e-5: keep the start's zero-shot quality
    epochs: float = 1.0
    interpolate: float = 0.5  # WiSE-FT's middle point (Wortsman et al. 2022): 1 = fine-tuned, 0 = start
    batch_size: int = 16
    group_size: int = 8  # the recipe's: 1 positive + 7 teacher-ranked documents per pseudo-query
    doc_max_length: int = 256  # teacher and index (training keeps the recipe's 128 for CPU speed)
    query_max_length: int = 64
    seed: int = 42
    precision: str = "auto"
    threads: int | None = None
    progress: bool = True

    @property
    def out(self) -> Path:
        return Path(self.output)

    @property
    def index_root(self) -> Path:
        return Path(self.indexes) if self.indexes else Path("indexes") / self.out.name

    def flat(self) -> dict:
        """Every setting by name but where things go (the state file's ``config``: what decides the results)."""
        skip = ("progress", "output", "indexes", "data_dir")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

    def recipe(self):
        """The :class:`~dupmae_ir.recipe.config.RecipeConfig` of the settings the route shares with the recipe
        (its other settings keep the recipe's defaults: head lr 1e-3, part loss 1, no dropout)."""
        from ..recipe.config import RecipeConfig

        return RecipeConfig.of(
            backbone=self.checkpoint, corpus=self.corpus, output=self.output,
            pretrain_steps=max(self.pretrain_steps, 1),
            pretrain_lr=self.pretrain_lr, learning_rate=self.lr, epochs=self.epochs, batch_size=self.batch_size,
            group_size=self.group_size, mine_depth=self.teacher_depth, query_max_length=self.query_max_length,
            eval_doc_max_length=self.doc_max_length, seed=self.seed, precision=self.precision,
            eval_precision=self.precision, threads=self.threads, holdout_fraction=0.0)
