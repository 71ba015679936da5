"""Hard negatives for fine-tuning: mined with BM25 (stage 1), with the model itself, exhaustively in
memory (stage 2, :class:`~dupmae_ir.encoder.ExactRetriever`), or from an index of
``python -m dupmae_ir.encode`` for corpora that do not fit in memory (``--mine-index``)."""
from __future__ import annotations

import os
from pathlib import Path

from ..runs import Run


def mine_with_bm25(corpus, queries: dict[str, str], depth: int, index_dir: Path, progress: bool = True):
    """Top-``depth`` BM25 hits per query with Pyserini (:mod:`dupmae_ir.bm25`); builds the index if absent."""
    from ..bm25 import bm25_search, build_bm25_index

    build_bm25_index(corpus, index_dir, progress=progress)
    return bm25_search(index_dir, queries, hits=depth, progress=progress)


def mine_with_model(model_name_or_path: str, corpus, queries: dict[str, str], depth: int, mode: str = "hybrid",
                    doc_max_length: int | None = None, query_max_length: int | None = None,
                    batch_size: int = 32, docs: dict[str, str] | None = None, progress: bool = True,
                    device: str | None = None):
    """Top-``depth`` hits per query retrieved by a DupMAE checkpoint over the whole corpus, exhaustive
    and in memory (:class:`~dupmae_ir.encoder.ExactRetriever`) on ``device`` (default: the GPU
    when there is one)."""
    import torch

    from ..data.training import load_documents
    from ..encoder import ExactRetriever
    from ..modeling.retriever import DupMAERetriever

    model, tokenizer = DupMAERetriever.from_pretrained(model_name_or_path)
    docs = docs if docs is not None else load_documents(corpus, progress=progress)
    retriever = ExactRetriever(model, tokenizer, doc_max_length=doc_max_length, query_max_length=query_max_length,
                               batch_size=batch_size, need_sparse=mode != "dense", device=device)
    with torch.inference_mode():
        retriever.index(list(docs), list(docs.values()), progress=progress)
        return retriever.search(queries, k=depth, modes=(mode,))[mode]


def negatives_from_run(run: Run, qrels: dict[str, dict[str, int]], depth: int, skip: int = 0) -> dict[str, list[str]]:
    """Hard negatives: each query's top-``depth`` hits with its judged positives (rel > 0) removed,
    after skipping the first ``skip`` non-positive hits (a guard against unjudged positives)."""
    out = {}
    for qid, hits in run.items():
        positives = {d for d, r in qrels.get(qid, {}).items() if r > 0}
        negs = [d for d, _ in hits[:depth] if d not in positives]
        out[qid] = negs[skip:]
    return out


def mine_from_index(index_dir: str | os.PathLike, queries: dict[str, str], depth: int, mode: str = "hybrid",
                    encoder: str | None = None) -> Run:
    """Top-``depth`` hits of each query from an index of ``python -m dupmae_ir.encode`` (the toolkit's
    Pyserini retrieval: FAISS + Lucene impact), for corpora too large for :class:`ExactRetriever`."""
    from ..search import DupMAESearcher

    searcher = DupMAESearcher(index_dir, encoder=encoder)
    return searcher.search_all(queries, modes=(mode,), hits=depth)[mode]
