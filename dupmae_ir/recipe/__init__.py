"""The CPU recipe: DupMAE on SciFact end to end, through the product, with its baselines, in one table.

``python -m dupmae_ir.recipe`` (and ``bash run.sh demo``) runs, on the bundled SciFact:

1. BM25 (Pyserini, flat title+text index) on the test queries;
2. the zero-shot backbone with its native MEAN pooling (MiniLM-L6 is a sentence-transformers model);
3. their fusion: normalised linear interpolation (Pyserini's ``--normalization``, alpha = 1);
4. DupMAE pre-training of the backbone on the SciFact corpus (:mod:`dupmae_ir.train.pretraining`);
5. fine-tuning stage 1 (in-batch + BM25 negatives) and stage 2 (negatives mined by the stage-1 model)
   on SciFact train (:mod:`dupmae_ir.train.finetuning`), from the pre-trained model and, for the
   ablation, from the backbone without pre-training at the same stages, settings and seed (each arm's
   stage 2 mines with its own stage-1 model);
6. every fine-tuned model through the product: ``dupmae_ir.encode`` into a FAISS and a Lucene impact
   index (``indexes/<name>/<model>``), ``dupmae_ir.search`` in every mode (TREC runs under
   ``runs/<name>/``), scored with ir-measures: dense ([CLS]), impact (bag-of-words), hybrid (DupMAE's
   unweighted sum) and, as a measurement, a normalised fusion of the two;
7. the paired comparisons (:mod:`.comparisons`): each not-pre-trained row against its pre-trained
   equal, stage 2 against stage 1, the final model against BM25 and the fusion baseline, with paired
   t and randomisation tests over the queries; and each model's grounded share (how many of a query's
   ten heaviest impact terms are word pieces of its own text).

The exhaustive in-memory scoring (:class:`~dupmae_ir.search.exact.ExactSearcher`, floats) mines stage-2
negatives and is shown beside each model's index scores. The report (``eval/<name>/report.md``,
``report.json``, ``plot.png``) carries the table, the settings and what each was chosen on, the machine
and commit, and the stock ``pyserini.search.hybrid`` command that reproduces the final hybrid run.
``--quick``: stage 1 only (the ablation is kept).

Modules: :mod:`.config` (the settings, composed of parts of the training dataclasses), :mod:`.state` (one
run's inputs and results), :mod:`.steps` (the steps), :mod:`.run` (:class:`Recipe`: the steps in order),
:mod:`.rows` (the table's typed rows), :mod:`.comparisons`, :mod:`.report`; the command line is ``__main__``
(every setting a flag, generated from the config).
"""
from __future__ import annotations

from .config import RecipeConfig
from .run import RECIPE_MARKER, RECIPE_OUTPUT, Recipe

__all__ = ["RECIPE_MARKER", "RECIPE_OUTPUT", "Recipe", "RecipeConfig"]
