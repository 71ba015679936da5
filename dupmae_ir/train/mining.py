"""Hard negatives for fine-tuning: mined with BM25 (stage 1), with the model itself, exhaustively in
memory (stage 2, :class:`~dupmae_ir.encoder.ExactRetriever`), from an index of
``python -m dupmae_ir.encode`` for corpora that do not fit in memory (``--mine-index``), or, under
``torchrun``, from an index that every process helps encode (:func:`mine_under_torchrun`)."""
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
                    encoder: str | None = None, query_max_length: int | None = None, device: str = "cpu",
                    progress: bool = True) -> Run:
    """Top-``depth`` hits of each query from an index of ``python -m dupmae_ir.encode`` (the toolkit's
    Pyserini retrieval: FAISS + Lucene impact), for corpora too large for :class:`ExactRetriever`."""
    from ..search import DupMAESearcher

    searcher = DupMAESearcher(index_dir, encoder=encoder, query_max_length=query_max_length, device=device)
    return searcher.search_all(queries, modes=(mode,), hits=depth, progress=progress)[mode]


def mine_under_torchrun(model_name_or_path: str, corpus, queries: dict[str, str], depth: int, index_dir: Path,
                        mode: str = "hybrid", encode: bool = True, doc_max_length: int | None = None,
                        query_max_length: int | None = None, batch_size: int = 32, progress: bool = True) -> Run:
    """Model mining as one process of a torchrun job, called by every process at once: unless ``encode``
    is False (a given ``--mine-index``), the processes encode the corpus into one index at ``index_dir``
    (:func:`~dupmae_ir.encode.distributed.encode_corpus_distributed`: a share each, resumable; an index
    already there from this checkpoint is reused), then each searches a share of the queries and every
    process receives all the hits."""
    import torch
    import torch.distributed as dist

    from ..encode.distributed import encode_corpus_distributed, world
    from ..errors import UserError
    from ..index import load_index

    rank, size, local = world()
    if encode and not (index_dir / "dupmae_index.json").is_file():
        encode_corpus_distributed(corpus, index_dir, encoder=model_name_or_path, batch_size=batch_size,
                                  doc_max_length=doc_max_length, progress=progress)
    if encode:
        built_by = load_index(index_dir).encoder
        if built_by not in (model_name_or_path, str(Path(model_name_or_path).resolve())):
            raise UserError(str(index_dir), f"this mining index was encoded by {built_by!r}, not by "
                                            f"{model_name_or_path!r}", "remove it or pick another --output-dir")
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    mine = {q: queries[q] for q in sorted(queries)[rank::size]}
    part = mine_from_index(index_dir, mine, depth, mode, encoder=model_name_or_path,
                           query_max_length=query_max_length, device=device, progress=progress and rank == 0)
    parts: list = [None] * size
    dist.all_gather_object(parts, part)
    return {q: hits for p in parts for q, hits in p.items()}
