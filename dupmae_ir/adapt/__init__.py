"""A label-free route to a new collection: ``python -m dupmae_ir.adapt --corpus C --checkpoint CKPT
--output encoders/adapt-NAME`` turns a corpus without judgments into an adapted checkpoint and the
indexes ``dupmae_ir.search --mode hybrid+bm25``, ``serve`` and stock Pyserini read.

Steps (each skipped when it finished earlier with the same settings, :mod:`.state`):

1. optional DupMAE pre-training of ``CKPT`` on the target corpus (``--pretrain-steps``; the recipe's step);
2. pseudo-queries: a seeded sample of documents, each asking for itself with its title, else its first
   sentence (:mod:`.pseudo`), written as a BEIR training folder;
3. a teacher without labels: BM25 fused with the untouched backbone (mean pooling) by normalised fusion,
   each pseudo-query's top ``--teacher-depth`` with scores, the source document added if missing (:mod:`.teacher`);
4. stage-3 fine-tuning (distillation from the teacher) from the (pre-trained) checkpoint;
5. weight interpolation toward the start (WiSE-FT, ``--interpolate``; :mod:`.interpolate`);
6. the target encoded into FAISS + Lucene impact indexes, beside its BM25 index, the served fusion
   (``hybrid+bm25``) recorded in the index's ``dupmae_index.json``.

Modules: :mod:`.config` (settings), :mod:`.state` (the state file), :mod:`.pseudo`, :mod:`.teacher`,
:mod:`.interpolate`, :mod:`.steps`, :mod:`.run` (:class:`Adaptation`); the command line is ``__main__``.
"""
from __future__ import annotations

from .config import SERVED_MODE, AdaptConfig
from .run import Adaptation, Summary

__all__ = ["SERVED_MODE", "AdaptConfig", "Adaptation", "Summary"]
