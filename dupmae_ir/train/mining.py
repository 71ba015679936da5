"""Hard negatives for fine-tuning: mined with BM25 (stage 1), with the model itself, exhaustively in
memory (stage 2, :class:`~dupmae_ir.search.exact.ExactSearcher`), from an index of
``python -m dupmae_ir.encode`` for corpora that do not fit in memory (``--mine-index``), or, under
``torchrun``, from an index that every process helps encode (:func:`mine_under_torchrun`)."""
from __future__ import annotations

import os
from pathlib import Path

from ..runs import Run

# hits mined past mine_depth + mine_skip: room for the judged positives that negatives_from_run removes
MINE_SLACK = 5


def mining_depth(depth: int, skip: int) -> int:
    """How many hits to retrieve per query for ``depth`` negatives after skipping ``skip``."""
    return depth + skip + MINE_SLACK


def mine_with_bm25(corpus, queries: dict[str, str], depth: int, index_dir: Path, progress: bool = True):
    """Top-``depth`` BM25 hits per query with Pyserini (:mod:`dupmae_ir.bm25`); builds the index if absent."""
    from ..bm25 import bm25_search, build_bm25_index

    build_bm25_index(corpus, index_dir, progress=progress)
    return bm25_search(index_dir, queries, hits=depth, progress=progress)


def mine_with_model(model_name_or_path: str, corpus, queries: dict[str, str], depth: int, mode: str = "hybrid",
                    doc_max_length: int | None = None, query_max_length: int | None = None,
                    batch_size: int = 32, docs: dict[str, str] | None = None, progress: bool = True,
                    device: str | None = None, searcher=None):
    """Top-``depth`` hits per query retrieved by a DupMAE checkpoint over the whole corpus, exhaustive
    and in memory (:class:`~dupmae_ir.search.exact.ExactSearcher`) on ``device`` (default: the GPU
    when there is one); ``searcher``: that checkpoint's ExactSearcher already indexed over the corpus
    (the recipe's, built for its evaluation), used instead of loading ``model_name_or_path``."""
    import torch

    if searcher is None:
        from ..data.training import load_documents
        from ..modeling.model import DupMAEModel
        from ..search.exact import ExactSearcher

        model, tokenizer = DupMAEModel.from_pretrained(model_name_or_path)
        docs = docs if docs is not None else load_documents(corpus, progress=progress)
        searcher = ExactSearcher(model, tokenizer, doc_max_length=doc_max_length, query_max_length=query_max_length,
                                 batch_size=batch_size, need_sparse=mode != "dense", device=device)
        with torch.inference_mode():
            searcher.index(list(docs), list(docs.values()), progress=progress)
    with torch.inference_mode():
        return searcher.search(queries, k=depth, modes=(mode,))[mode]


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
    Pyserini retrieval: FAISS + Lucene impact), for corpora too large for :class:`ExactSearcher`."""
    from ..search import DupMAESearcher

    searcher = DupMAESearcher(index_dir, encoder=encoder, query_max_length=query_max_length, device=device)
    return searcher.search_all(queries, modes=(mode,), hits=depth, progress=progress)[mode]


def _host_group(rank: int, size: int, local: int):
    """``(group, leader)``: the process group of this host's ranks (None: all ranks are on this host)
    and its lowest global rank. torchrun numbers a host's ranks contiguously."""
    import torch.distributed as dist

    per_host = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    if per_host >= size:
        return None, 0
    group, _ = dist.new_subgroups(group_size=per_host)  # every rank makes every host's group
    return group, rank - local


def mine_under_torchrun(model_name_or_path: str, corpus, queries: dict[str, str], depth: int, index_dir: Path,
                        mode: str = "hybrid", encode: bool = True, doc_max_length: int | None = None,
                        query_max_length: int | None = None, batch_size: int = 32, progress: bool = True,
                        query_batch_size: int = 64) -> Run:
    """Model mining as one process of a torchrun job, called by every process at once: unless ``encode``
    is False (a given ``--mine-index``), the processes encode the corpus into one index at ``index_dir``
    (:func:`~dupmae_ir.encode.distributed.encode_corpus_distributed`: a share each, resumable; an index
    already there from this checkpoint is reused). Then one process per host (its lowest rank) opens the
    index (FAISS, Lucene and its JVM: one copy per host, not one per process); every process encodes a
    share of the queries, ``query_batch_size`` at a time, sends the batch to its host's leader, which
    searches the host's batches as one and sends each process its hits back; every process then
    receives all the hits."""
    import torch
    import torch.distributed as dist

    from ..encode.distributed import encode_corpus_distributed, world
    from ..errors import UserError
    from ..index import load_index
    from ..inference import EncodedBatch
    from ..search.searcher import DupMAESearcher, query_encoder

    rank, size, local = world()
    if encode and not (index_dir / "dupmae_index.json").is_file():
        encode_corpus_distributed(corpus, index_dir, encoder=model_name_or_path, batch_size=batch_size,
                                  doc_max_length=doc_max_length, progress=progress)
    info = load_index(index_dir, check=False)
    if encode and info.encoder not in (model_name_or_path, str(Path(model_name_or_path).resolve())):
        raise UserError(str(index_dir), f"this mining index was encoded by {info.encoder!r}, not by "
                                        f"{model_name_or_path!r}", "remove it or pick another --output-dir")
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    group, leader = _host_group(rank, size, local)
    searcher = None
    if rank == leader:
        searcher = DupMAESearcher(index_dir, encoder=model_name_or_path, query_max_length=query_max_length,
                                  device=device)
        encoder = searcher.encoder
    else:
        encoder = query_encoder(info, model_name_or_path, device, query_max_length=query_max_length)
    mine = sorted(queries)[rank::size]
    batches = [mine[i:i + query_batch_size] for i in range(0, len(mine), query_batch_size)]
    host_size = dist.get_world_size(group)
    rounds: list = [None] * host_size
    dist.all_gather_object(rounds, len(batches), group=group)
    part: Run = {}
    for r in range(max(rounds)):  # a rank whose share is done sends empty batches
        qids = batches[r] if r < len(batches) else []
        encoded = encoder.encode_queries([queries[q] for q in qids]) if qids else None
        sent = [None] * host_size if rank == leader else None
        dist.gather_object((qids, encoded), sent, dst=leader, group=group)
        replies = None
        if rank == leader:
            full = [(q, e) for q, e in sent if q]
            all_qids = [q for share, _ in full for q in share]
            hits = {}
            if all_qids:
                import numpy as np

                batch = EncodedBatch(np.concatenate([e.dense for _, e in full]),  # (B, d)
                                     [imp for _, e in full for imp in e.impacts])
                hits = searcher.search_batch(all_qids, [queries[q] for q in all_qids], (mode,), hits=depth,
                                             encoded=batch)[mode]
            replies = [{q: hits[q] for q in share} for share, _ in sent]
        mine_hits: list = [None]
        dist.scatter_object_list(mine_hits, replies, src=leader, group=group)
        part.update(mine_hits[0])
    parts: list = [None] * size
    dist.all_gather_object(parts, part)
    return {q: hits for p in parts for q, hits in p.items()}
