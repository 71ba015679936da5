"""Encode a corpus into a FAISS index and a Lucene impact index in one pass; pre-encode topics.

    python -m dupmae_ir.encode --corpus scifact-path --encoder CKPT --output indexes/scifact
    python -m dupmae_ir.encode --topics beir/scifact --split test --encoder CKPT --output q/scifact-test
    python -m dupmae_ir.encode merge --inputs shard0 shard1 --output indexes/full

Library: :func:`encode_corpus`, :func:`merge_shards` (:mod:`.corpus`), :func:`encode_queries`
(:mod:`.queries`); the command line is ``__main__``.

Output folder (``--output DIR``):

- ``DIR/dense/index`` + ``DIR/dense/docid``: what Pyserini's ``FaissSearcher`` reads (flat inner
  product by default; ``--faiss`` types: :mod:`dupmae_ir.dense_index`); vectors are DupMAE's
  ``h_hat = W^T h_cls`` (paper 3.4);
- ``DIR/impact/``: a Lucene impact index built by Anserini (``JsonVectorCollection``, ``--impact
  --pretokenized``) from ``round(s_d * mu_d)`` on the document's top-k tokens (paper eq. 7, 3.4);
- ``DIR/dupmae_index.json``: provenance (encoder, the full ``RepresentationConfig`` with ``doc_scale`` /
  ``query_scale`` / ``doc_topk`` / ``query_topk`` / activation, corpus, counts, dtype, version, time).

How it scales:

- streaming: documents are read lazily and encoded ``--chunk-size`` at a time; each finished chunk
  is written to a work folder ``.DIR.partial`` beside ``DIR`` (dense ``.npy``, doc ids, impact
  ``.jsonl``). Memory stays flat in corpus size (but for the flat FAISS index itself at the end);
- inside a chunk, texts are length-sorted into ``--batch-size`` batches with dynamic padding;
- resumption: a killed run restarted with the same command skips the chunks already finished and
  produces the same indexes (a changed command starts the work folder afresh);
- shards: ``--shard-id i --shard-num n`` encodes chunks ``i, i+n, i+2n, ...`` into a shard folder;
  ``merge`` orders all shards' chunks back into corpus order and builds the indexes, identical to
  one unsharded run; meant for batch schedulers (one shard per job);
- torchrun: ``torchrun --nproc_per_node=N [--nnodes=M ...] -m dupmae_ir.encode --corpus ... --output DIR``
  gives each rank a deterministic share (``cuda:LOCAL_RANK`` with GPUs); after a barrier rank 0 builds
  the same indexes as a one-process run (:mod:`.distributed`);
- safe: ``DIR`` is checked before any model loads (:mod:`dupmae_ir.outputs`): an existing folder is
  replaced only when it is an earlier index and ``--overwrite`` is given, never a folder the toolkit
  did not write; a lock makes a second process writing ``DIR`` fail at once; indexes are built in a
  marked temporary sibling folder and renamed to ``DIR`` at the end (after a failure, or a kill, the
  next run removes the leftovers and resumes). The Anserini indexer is a child process that dies
  with its parent.

Empty impact vectors (a document whose every weight quantises to 0, e.g. an empty text): Anserini
skips such a document ("empty" counter), so it would vanish from the impact index. Policy: it gets
one placeholder token :data:`EMPTY_TOKEN` with weight 1, which no query ever contains, so the document
is in the index (its id retrievable) and scores 0 for every query. The count is recorded as
``empty_impact_docs`` in ``dupmae_index.json``.
"""
from ..dense_index import FAISS_KINDS
from .corpus import EMPTY_TOKEN, encode_corpus, impact_line, merge_shards
from .queries import LUCENE_MAX_CLAUSES, encode_queries

__all__ = ["EMPTY_TOKEN", "FAISS_KINDS", "LUCENE_MAX_CLAUSES", "encode_corpus", "encode_queries", "impact_line",
           "merge_shards"]
