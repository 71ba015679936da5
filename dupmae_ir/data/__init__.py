"""The data layer: one vocabulary for corpora, queries and qrels across every command.

A *collection name* is one of

- ``default``: the bundled SciFact (BEIR layout, under ``dupmae_ir/resources/scifact``);
- an ``ir_datasets`` id (``msmarco-passage``, ``msmarco-passage/dev/small``,
  ``msmarco-passage/trec-dl-2019/judged``, ``beir/<name>[/<split>]``, ``beir/cqadupstack/<forum>``);
- a path: a local BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``), a
  Pyserini JSONL collection (a ``.jsonl[.gz]`` file or a folder of them, lines ``{"id", "contents"}``),
  or, for queries, a TSV topics file (``qid<TAB>text``) or a JSONL queries file, or a qrels file
  (BEIR ``query-id corpus-id score`` TSV or TREC ``qid 0 docid rel``). A local folder may also hold
  per-split queries ``queries.<split>.jsonl`` next to ``qrels/<split>.tsv`` (the MS MARCO layout of
  ``../shared/data/msmarco-passage``: splits ``dev-small``, ``dl19``, ``dl20``).

Empty documents (title and text both empty) follow one counted policy, ``empty=`` of
:meth:`Collection.iter_docs`: ``keep`` (default), ``skip`` or ``error``. Bad input raises
:class:`DataError` naming file, line and field, and the fix.

Contracts (plain data at module boundaries, as BEIR and ir-measures use them):
``Doc(id, title, text)`` streamed from :func:`iter_corpus`; queries ``{qid: text}``;
qrels ``{qid: {docid: int}}``. Title and text are kept apart; :func:`doc_text` is the one place they
are joined (``"title text"``; the title is dropped when empty).
"""
from .readers import CorpusStats, check_id
from .resolve import Collection, iter_corpus, known_names, load_qrels, load_queries, resolve
from .types import DataError, Doc, doc_text

__all__ = [
    "DataError", "Doc", "doc_text", "Collection", "resolve", "known_names",
    "iter_corpus", "load_queries", "load_qrels", "CorpusStats", "check_id",
]
