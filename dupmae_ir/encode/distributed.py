"""Encoding under ``torchrun``: every process encodes a deterministic share of the chunks, one builds
the indexes.

    torchrun --nproc_per_node=N [--nnodes=M --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT] \\
        -m dupmae_ir.encode --corpus C --encoder CKPT --output OUT

Rank ``r`` of ``W`` encodes chunks ``r, r + W, r + 2W, ...`` on ``cuda:LOCAL_RANK`` when there are GPUs
(else the CPU) into the output's one resumable work folder (``.OUT.partial``: on a file system every
node sees); after a barrier rank 0 builds one FAISS index and one Lucene impact index from all chunks
in corpus order. The chunk files do not depend on who encoded them, so the indexes equal a
one-process run's whatever W is, and a rerun of a killed job resumes from the finished chunks (with
any W). Rank 0 alone claims and locks the output; the processes only synchronise through
``torch.distributed`` (gloo on CPUs, NCCL on GPUs), which torchrun sets up.
"""
from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

from ..dense_index import DenseIndexSpec

WAIT = timedelta(days=7)  # a barrier may wait for the slowest rank's whole share of the corpus


def world() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when started by torchrun with more than one process, else None."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    return int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0"))


def is_worker() -> bool:
    """True in a torchrun process other than rank 0 (rank 0, or no torchrun: False)."""
    ranks = world()
    return ranks is not None and ranks[0] != 0


def encode_corpus_distributed(corpus, output, encoder: str = "default", batch_size: int = 32, dtype: str = "auto",
                              dense: bool = True, impact: bool = True, faiss: str | DenseIndexSpec = "flat",
                              device: str = "auto",
                              chunk_size: int = 4096, threads: int | None = None, data_dir=None,
                              progress: bool = True, hnsw_m: int = 32, pq_m: int | None = None,
                              overwrite: bool = False, doc_max_length: int | None = None) -> Path:
    """:func:`dupmae_ir.encode.encode_corpus` as one process of a torchrun job (see the module doc)."""
    import torch
    import torch.distributed as dist

    from ..data import DataError, resolve
    from ..data.readers import CorpusStats
    from ..dense_index import dense_spec
    from ..errors import UserError
    from ..index import INDEX_OUTPUT
    from ..inference import DupMAEEncoder
    from ..outputs import claim_output_dir
    from ..provenance import write_json
    from .build import build_indexes
    from .corpus import _add_corpus_fingerprint as with_corpus
    from .corpus import _done_totals, _encode_chunks, _prepare_work, _remove_work, _settings, _threads

    rank, size, local = world()
    index_spec = dense_spec(faiss, hnsw_m, pq_m)
    gpus = torch.cuda.is_available() and device in ("auto", "cuda")
    if device == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpus else "gloo", timeout=WAIT)
    collection = resolve(corpus, data_dir=data_dir)
    if not collection.has_corpus():
        raise DataError(collection.name, "this collection has no documents to encode", "pass one with a corpus")
    enc = DupMAEEncoder(str(encoder), device=device, dtype=dtype).with_lengths(doc_max_length=doc_max_length)
    settings = _settings(enc, collection.reference, batch_size, chunk_size, 0, 1, dense, impact)

    # rank 0 claims the output and prepares the work folder; every rank learns the outcome
    claim_cm = claim = None
    shared: list = [None, None]
    if rank == 0:
        try:
            claim_cm = claim_output_dir(output, INDEX_OUTPUT, overwrite)
            claim = claim_cm.__enter__()
            shared = [None, str(_prepare_work(claim, settings, overwrite))]
        except UserError as e:
            shared = [(e.where, e.what, e.fix), None]
    dist.broadcast_object_list(shared, src=0)
    if shared[0] is not None:
        raise UserError(*shared[0])
    work = Path(shared[1])
    try:
        mine = json.loads((work / "state.json").read_text())
        if mine != settings:
            raise UserError(f"rank {rank}", f"settings differ from rank 0's in "
                                            f"{sorted(k for k in settings if settings[k] != mine.get(k))}",
                            "start every process with the same command and software")
        start = time.perf_counter()
        counts = _encode_chunks(enc, collection, work, settings, progress and rank == 0, CorpusStats(),
                                part=(rank, size), overwrite=overwrite)
        share = {"rank": rank, "device": device, "host": os.uname().nodename, "chunks": counts["chunks"],
                 "docs": counts["docs"], "encoded_docs": counts["encoded_docs"],
                 "resumed_chunks": counts["resumed_chunks"], "encode_seconds": round(counts["encode_seconds"], 2),
                 "wall_seconds": round(time.perf_counter() - start, 2)}
        write_json(work / "ranks" / f"rank-{rank}.json", share)
        dist.barrier()
        if rank == 0:
            totals, names = _done_totals(work / "chunks")
            if totals["docs"] == 0:
                raise DataError(collection.name, "no documents found", "pass a collection with documents")
            shares = [json.loads((work / "ranks" / f"rank-{r}.json").read_text()) for r in range(size)]
            extra = {"world_size": size, "ranks": shares, "total_chunks": counts["total_chunks"],
                     "resumed_chunks": sum(s["resumed_chunks"] for s in shares),
                     "encode_seconds": max(s["encode_seconds"] for s in shares),
                     "wall_seconds_encode": max(s["wall_seconds"] for s in shares)}
            build_indexes([(work / "chunks", names)], claim, with_corpus(settings, collection), totals, index_spec,
                          threads or _threads(), extra)
            _remove_work(work)
        dist.barrier()
    finally:
        if claim_cm is not None:
            claim_cm.__exit__(None, None, None)
    return Path(output)
