"""Dense, impact and hybrid retrieval over the indexes of :mod:`dupmae_ir.encode`, with Pyserini.

An index folder written by ``python -m dupmae_ir.encode`` holds ``dense/`` (FAISS, the files Pyserini's
``FaissSearcher`` reads), ``impact/`` (Lucene impact index, read by ``LuceneImpactSearcher``) and
``dupmae_index.json`` (provenance: encoder, quantisation scales ``s_q``/``s_d``, top-k, activation);
see :mod:`dupmae_ir.index`.

DupMAE's relevance score (paper section 3.4) is an unweighted sum of two inner products::

    <q, d> = h_q . h_d + sum_{i in topk(d)} mu_q[i] * mu_d[i]

The impact index stores ``round(mu * s)``, so Lucene's integer score is ``~ s_q * s_d * (mu_q . mu_d)``
and ``score = dense + alpha * sparse`` with ``alpha = 1 / (s_q * s_d)`` and no normalisation gives
DupMAE's score back: that is the default fusion (``sum``); fusion itself lives in
:mod:`dupmae_ir.runs` and equals ``python -m pyserini.search.hybrid`` with ``fusion --alpha <1/(s_q*s_d)>``.

Library (:mod:`.searcher`; the command line is ``__main__``)::

    from dupmae_ir.search import DupMAESearcher
    searcher = DupMAESearcher("indexes/default/scifact")
    runs = searcher.search_all(queries, modes=("dense", "impact", "hybrid"), hits=1000)
    # runs["hybrid"][qid] = [(docid, score), ...] best first

Exhaustive search in memory, without an index (small corpora, stage-2 mining):
:class:`dupmae_ir.search.exact.ExactSearcher`.

CLI: ``python -m dupmae_ir.search --index DIR --topics FILE_OR_NAME [--mode hybrid] --output runs/x.trec``.
"""
from .searcher import DupMAESearcher

__all__ = ["DupMAESearcher"]
