"""Encode a corpus into a FAISS index and a Lucene impact index in one pass (:func:`encode_corpus`),
and merge shard folders (:func:`merge_shards`). Stage 1, here: resumable chunks of encoded documents;
stage 2: :mod:`.build`. See :mod:`dupmae_ir.encode` for the layout."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from ..dense_index import DenseIndexSpec, dense_spec
from ..index import INDEX_META as META_NAME
from ..index import INDEX_OUTPUT, SHARD_OUTPUT
from .build import EMPTY_TOKEN, RETRY_FIX, build_indexes

log = logging.getLogger(__name__)

STATE_NAME = "state.json"


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def _write_bytes_atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename to ``path``; a failed write (disk full) is one :class:`OutputError`."""
    from ..errors import OutputError
    from ..provenance import atomic_write

    try:
        atomic_write(path, write)
    except OSError as e:
        raise OutputError(path, f"could not be written ({e.strerror or e})", RETRY_FIX) from e


def _chunks(iterable, size: int):
    buf = []
    for item in iterable:
        buf.append(item)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def token_json(enc) -> list[str]:
    """Each vocabulary token as a JSON string literal (computed once per encoder)."""
    if getattr(enc, "_token_json", None) is None:
        enc._token_json = [json.dumps(t, ensure_ascii=False) for t in enc.vocab]
    return enc._token_json


def impact_lines(doc_ids: list[str], ids, weights, tokens: list[str]) -> str:
    """``JsonVectorCollection`` lines of documents given as arrays (:class:`~dupmae_ir.inference.DocArrays`),
    byte for byte :func:`impact_line` of their dictionaries, built without one."""
    lines = []
    for doc_id, row_ids, row_weights in zip(doc_ids, ids.tolist(), weights.tolist()):
        pairs = ", ".join(f"{tokens[i]}: {w}" for i, w in zip(row_ids, row_weights) if w > 0)
        vector = pairs or f"{json.dumps(EMPTY_TOKEN)}: 1"
        lines.append(f'{{"id": {json.dumps(doc_id, ensure_ascii=False)}, "contents": "", "vector": {{{vector}}}}}\n')
    return "".join(lines)


def impact_line(doc_id: str, vector: dict[str, int]) -> str:
    """One ``JsonVectorCollection`` line; an empty vector gets the :data:`EMPTY_TOKEN` placeholder."""
    return json.dumps({"id": doc_id, "contents": "", "vector": vector or {EMPTY_TOKEN: 1}}, ensure_ascii=False)


def _settings(enc, corpus: str, batch_size: int, chunk_size: int, shard_id: int, shard_num: int,
              dense: bool, impact: bool) -> dict:
    """Everything that decides the chunk files' bytes: a changed value invalidates a work folder.
    ``inputs``: the checkpoint's fingerprint (weights and config, by content); the corpus' is added once
    its chunks are encoded (:func:`_add_corpus_fingerprint`): a resume checks each kept chunk's documents."""
    from ..fingerprint import checkpoint_fingerprint
    from ..modeling.backbone import resolve_model_path

    path = resolve_model_path(enc.model_name_or_path)
    return {
        "inputs": {"encoder": checkpoint_fingerprint(path)},
        "encoder": str(Path(path).resolve()) if Path(path).exists() else path,
        "retriever": asdict(enc.config),
        "dtype": enc.dtype_name,
        "corpus": corpus,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "shard_id": shard_id,
        "shard_num": shard_num,
        "dense": dense,
        "impact": impact,
    }


def _add_corpus_fingerprint(settings: dict, collection) -> dict:
    """``settings`` with the corpus' fingerprint in ``inputs``: what an index or a shard records."""
    from ..fingerprint import corpus_fingerprint

    return {**settings, "inputs": {**settings["inputs"], "corpus": corpus_fingerprint(collection)}}


# ------------------------------------------------------------------------------------------------
# stage 1: encode chunks (resumable)
# ------------------------------------------------------------------------------------------------
def _encode_chunks(enc, collection, work: Path, settings: dict, progress: bool, data_stats,
                   part: tuple[int, int] | None = None, overwrite: bool = False) -> dict:
    """Encode this shard's chunks into ``work/chunks``; return counts. Finished chunks are skipped when
    their documents are unchanged; a changed one is refused, or with ``overwrite`` encoded again.
    ``part``: ``(rank, world_size)`` under torchrun (chunks ``rank, rank + world, ...``); default the
    settings' shard."""
    from tqdm import tqdm

    from ..data import doc_text
    from ..errors import UserError
    from ..fingerprint import texts_digest

    chunk_dir = work / "chunks"
    digests: dict[int, str] = {}  # chunk number -> its documents' digest, recorded in its .done
    (chunk_dir / "vectors").mkdir(parents=True, exist_ok=True)
    chunk_size = settings["chunk_size"]
    shard_id, shard_num = part or (settings["shard_id"], settings["shard_num"])
    counts = {"docs": 0, "empty_text_docs": 0, "empty_impact_docs": 0, "chunks": 0, "resumed_chunks": 0,
              "total_chunks": 0, "encode_seconds": 0.0, "encoded_docs": 0}
    total = collection.doc_count()
    if total is not None and shard_num > 1:
        total = None  # the shard's share is not known exactly up front
    bar = tqdm(total=total, unit="doc", desc=f"encode{'' if shard_num == 1 else f' shard {shard_id}/{shard_num}'}",
               disable=not progress, dynamic_ncols=True)
    max_length, batch_size = enc.config.doc_max_length, settings["batch_size"]

    def todo():
        """(number, docs, texts, info) of this shard's chunks; ``info`` of a finished chunk, else None.
        A finished chunk is kept only when its documents are the ones it was encoded from."""
        for number, docs in enumerate(_chunks(collection.iter_docs(empty="keep", stats=data_stats), chunk_size)):
            counts["total_chunks"] = number + 1  # written by the thread, read once it has finished
            if number % shard_num == shard_id:
                done = chunk_dir / f"{number:07d}.done"
                info = json.loads(done.read_text()) if done.is_file() else None
                texts = [doc_text(d) for d in docs]
                digests[number] = texts_digest(t for d, text in zip(docs, texts) for t in (d.id, text))
                if info is not None and info.get("digest") != digests[number] and overwrite:
                    log.warning("chunk %d: its documents changed since it was encoded: encoding it again", number)
                    info = None
                elif info is not None and info.get("digest") != digests[number]:
                    raise UserError(work, f"holds an interrupted encode that cannot be resumed: the corpus changed "
                                          f"(documents {docs[0].id} .. {docs[-1].id} of chunk {number} differ from "
                                          "the ones encoded)", "rerun with the corpus it was started on, or pass "
                                                                "--overwrite to start afresh")
                yield number, docs, (None if info else texts), info

    # the next chunk is read, tokenised and padded in a thread while the model encodes this one
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
    try:
        chunks = todo()
        ahead = pool.submit(_ahead, enc, chunks, max_length, batch_size)
        while True:
            resumed, item = ahead.result()
            for docs, info in resumed:  # finished by an earlier run: counted, not encoded again
                for key in ("docs", "empty_text_docs", "empty_impact_docs"):
                    counts[key] += info[key]
                counts["chunks"] += 1
                counts["resumed_chunks"] += 1
                bar.update(len(docs))
            if item is None:
                break
            number, docs, texts, prepared = item
            ahead = pool.submit(_ahead, enc, chunks, max_length, batch_size)
            name = f"{number:07d}"
            done = chunk_dir / f"{name}.done"
            start = time.perf_counter()
            out = enc.encode_doc_arrays(texts, batch_size, prepared)  # dense (n, d), top-k (n, k)
            counts["encode_seconds"] += time.perf_counter() - start
            counts["encoded_docs"] += len(docs)
            ids = [d.id for d in docs]
            if settings["dense"]:
                import numpy as np

                def save(p, array=out.dense):
                    with open(p, "wb") as fh:  # a file object: np.save would append ".npy" to a name
                        np.save(fh, array)

                _write_bytes_atomic(chunk_dir / f"{name}.npy", save)
            _write_bytes_atomic(chunk_dir / f"{name}.docid",
                                lambda p, ids=ids: p.write_text("".join(i + "\n" for i in ids)))
            empty_impact = int((out.weights.max(axis=1, initial=0) <= 0).sum())
            if settings["impact"]:
                lines = impact_lines(ids, out.ids, out.weights, token_json(enc))
                _write_bytes_atomic(chunk_dir / "vectors" / f"{name}.jsonl",
                                    lambda p, lines=lines: p.write_text(lines, encoding="utf-8"))
            info = {"docs": len(docs), "empty_text_docs": sum(1 for t in texts if not t),
                    "empty_impact_docs": empty_impact, "digest": digests.pop(number)}
            _write_bytes_atomic(done, lambda p, info=info: p.write_text(json.dumps(info)))  # the chunk counts only now
            for key in ("docs", "empty_text_docs", "empty_impact_docs"):
                counts[key] += info[key]
            counts["chunks"] += 1
            bar.update(len(docs))
            if counts["encode_seconds"]:
                bar.set_postfix(enc_docs_s=f"{counts['encoded_docs'] / counts['encode_seconds']:.1f}")
    finally:
        pool.shutdown(cancel_futures=True)
        bar.close()
    return counts


def _ahead(enc, chunks, max_length: int, batch_size: int):
    """``(resumed, item)``: the finished chunks met on the way as ``(docs, info)``, then the next chunk to
    encode as ``(number, docs, texts, prepared batches)`` (:meth:`DupMAEEncoder.prepare`), or None."""
    resumed = []
    for number, docs, texts, info in chunks:
        if info is not None:
            resumed.append((docs, info))
        else:
            return resumed, (number, docs, texts, enc.prepare(texts, max_length, batch_size))
    return resumed, None


def _done_totals(chunk_dir: Path) -> tuple[dict, list[str]]:
    """Counts summed over every finished chunk of a work folder, and the finished chunk names in order."""
    totals = {"docs": 0, "empty_text_docs": 0, "empty_impact_docs": 0}
    names = sorted(p.name[:-5] for p in chunk_dir.glob("*.done"))
    for name in names:
        info = json.loads((chunk_dir / f"{name}.done").read_text())
        for key in totals:
            totals[key] += info[key]
    return totals, names


def _prepare_work(claim, settings: dict, overwrite: bool = False) -> Path:
    """The resumable work folder ``.NAME.partial`` of a claimed output, resumed when it was made from the
    same settings and inputs (checkpoint and corpus fingerprints), else refused naming what changed, or
    with ``overwrite`` started afresh; its ``state.json`` records the settings."""
    from ..errors import UserError
    from ..fingerprint import changes
    from ..provenance import write_json

    work = claim.sibling("partial")
    state_path = work / STATE_NAME
    if state_path.is_file():
        try:
            recorded = json.loads(state_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            recorded = None
        if not isinstance(recorded, dict):
            recorded = {STATE_NAME: "unreadable"}
        if recorded == settings:
            log.info("resuming from %s", work)
        elif not overwrite:
            raise UserError(work, "holds an interrupted encode that cannot be resumed: "
                                  + "; ".join(changes(recorded, settings)[:4]),
                            "rerun the command that started it unchanged (same checkpoint and corpus), "
                            "or pass --overwrite to start afresh")
        else:
            log.warning("%s was made from other inputs (%s): starting afresh", work,
                        "; ".join(changes(recorded, settings)[:4]))
            _remove_work(work)
    if not state_path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        write_json(state_path, settings)
    return work


def _remove_work(work: Path) -> None:
    """Remove a resumable work folder: only one the toolkit made (it holds ``state.json``)."""
    if (work / STATE_NAME).is_file():
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------
def encode_corpus(corpus, output, encoder="default", batch_size: int = 32, dtype: str = "auto",
                  dense: bool = True, impact: bool = True, faiss: str | DenseIndexSpec = "flat",
                  device: str = "cpu",
                  chunk_size: int = 4096, shard_id: int = 0, shard_num: int = 1, threads: int | None = None,
                  data_dir=None, progress: bool = True, hnsw_m: int = 32, pq_m: int | None = None,
                  overwrite: bool = False, doc_max_length: int | None = None,
                  extra_provenance: dict | None = None) -> Path:
    """Encode ``corpus`` (a collection name or path, see :mod:`dupmae_ir.data`) into ``output``.

    ``encoder``: a checkpoint path, ``"default"``, or a ready :class:`~dupmae_ir.inference.DupMAEEncoder`
    (a path is loaded only after ``output`` is checked and locked). ``doc_max_length``: pieces per document
    (default: the checkpoint's ``RepresentationConfig``), fixed in the index. ``overwrite``: replace an earlier
    index at ``output`` (a folder the toolkit did not write is never replaced). ``faiss``: a type name of
    :data:`FAISS_KINDS` (with ``hnsw_m``/``pq_m``) or a :class:`~dupmae_ir.dense_index.DenseIndexSpec`.
    ``extra_provenance``: more fields of ``dupmae_index.json`` (e.g. a route's served mode). Returns ``output``.
    With ``shard_num > 1`` the output is a shard folder for :func:`merge_shards`. See the module
    docstring for layout, resumption and the empty-vector policy.
    """
    from ..data import resolve
    from ..data.readers import CorpusStats
    from ..inference import DupMAEEncoder
    from ..outputs import claim_output_dir
    from ..provenance import provenance, write_json

    if not dense and not impact:
        raise ValueError("nothing to do: dense=False and impact=False (drop --dense-only or --impact-only).")
    index_spec = dense_spec(faiss, hnsw_m, pq_m)  # checked before the model loads
    if not (0 <= shard_id < shard_num):
        raise ValueError(f"--shard-id {shard_id} must be in [0, --shard-num {shard_num}).")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size ({batch_size}) and chunk_size ({chunk_size}) must be >= 1.")
    collection = resolve(corpus, data_dir=data_dir)
    if not collection.has_corpus():
        from ..data import DataError

        raise DataError(collection.name, "this collection has no documents to encode", "pass one with a corpus")
    if not isinstance(encoder, DupMAEEncoder):  # a bad checkpoint fails before the output is claimed
        from ..modeling.backbone import check_checkpoint

        check_checkpoint(encoder, doc_max_length=doc_max_length)
    spec = SHARD_OUTPUT if shard_num > 1 else INDEX_OUTPUT
    with claim_output_dir(output, spec, overwrite) as claim:
        enc = encoder if isinstance(encoder, DupMAEEncoder) else DupMAEEncoder(str(encoder), device=device, dtype=dtype)
        enc = enc.with_lengths(doc_max_length=doc_max_length)  # recorded in the provenance's retriever config
        settings = _settings(enc, collection.reference, batch_size, chunk_size, shard_id, shard_num, dense, impact)
        work = _prepare_work(claim, settings, overwrite)

        stats = CorpusStats()
        start = time.perf_counter()
        counts = _encode_chunks(enc, collection, work, settings, progress, stats, overwrite=overwrite)
        if counts["docs"] == 0 and shard_num == 1:
            from ..data import DataError

            raise DataError(collection.name, "no documents found", "pass a collection with documents")
        names = sorted(p.name[:-5] for p in (work / "chunks").glob("*.done"))
        settings = _add_corpus_fingerprint(settings, collection)
        extra = {"device": enc.device, "shard_id": shard_id, "shard_num": shard_num,
                 "total_chunks": counts["total_chunks"],
                 "resumed_chunks": counts["resumed_chunks"], "encode_seconds": round(counts["encode_seconds"], 2),
                 "encode_docs_per_s": round(counts["encoded_docs"] / counts["encode_seconds"], 2)
                 if counts["encode_seconds"] else None,
                 "wall_seconds_encode": round(time.perf_counter() - start, 2), **(extra_provenance or {})}
        if shard_num > 1:
            with claim.atomic() as tmp:
                shutil.move(str(work / "chunks"), str(tmp / "chunks"))
                write_json(tmp / META_NAME, provenance(kind="dupmae_shard", settings=settings, chunk_names=names,
                                                       **{**counts, **extra}))
        else:
            build_indexes([(work / "chunks", names)], claim, settings, counts, index_spec, threads or _threads(),
                          extra)
        _remove_work(work)
        return claim.path


def merge_shards(inputs: list, output, faiss: str | DenseIndexSpec = "flat", threads: int | None = None,
                 hnsw_m: int = 32, pq_m: int | None = None, overwrite: bool = False) -> Path:
    """Build the indexes of ``output`` from the shard folders of ``--shard-id/--shard-num`` runs.

    Checks that the shards come from the same settings and cover every shard id and chunk once.
    ``faiss``: as in :func:`encode_corpus`.
    """
    from ..errors import IndexFormatError
    from ..index import read_json
    from ..outputs import claim_output_dir

    index_spec = dense_spec(faiss, hnsw_m, pq_m)
    metas = []
    for folder in map(Path, inputs):
        meta_path = folder / META_NAME
        fix = "pass the shard folders written by `encode --shard-id i --shard-num n`"
        meta = read_json(meta_path, "shard provenance", fix)
        if meta.get("kind") != "dupmae_shard":
            raise IndexFormatError(meta_path, f"kind={meta.get('kind')!r}, expected 'dupmae_shard'", fix)
        metas.append((folder, meta))
    base = {k: v for k, v in metas[0][1]["settings"].items() if k != "shard_id"}
    for folder, meta in metas:
        other = {k: v for k, v in meta["settings"].items() if k != "shard_id"}
        if other != base:
            diff = sorted(k for k in base if base[k] != other.get(k))
            raise IndexFormatError(folder, f"shard settings differ from {metas[0][0]} in {diff}",
                                   "encode every shard with the same command")
    shard_num = base["shard_num"]
    ids = sorted(m["settings"]["shard_id"] for _, m in metas)
    if ids != list(range(shard_num)):
        raise IndexFormatError("--inputs", f"shards present: {ids}; need every id in 0..{shard_num - 1} exactly once",
                               "pass every shard folder once")
    total_chunks = max(m["total_chunks"] for _, m in metas)
    names = sorted(n for _, m in metas for n in m["chunk_names"])
    if names != [f"{i:07d}" for i in range(total_chunks)]:
        raise IndexFormatError("--inputs", f"chunks missing or duplicated across shards: have {len(names)}, "
                                           f"expected {total_chunks}", "re-run the incomplete shards")
    counts = {k: sum(m[k] for _, m in metas) for k in ("docs", "empty_text_docs", "empty_impact_docs")}
    settings = {**base, "shard_id": None}
    extra = {"merged_from": [str(f.resolve()) for f, _ in metas], "shard_num": shard_num, "total_chunks": total_chunks}
    with claim_output_dir(output, INDEX_OUTPUT, overwrite) as claim:
        return build_indexes([(f / "chunks", m["chunk_names"]) for f, m in metas], claim, settings, counts,
                              index_spec, threads or _threads(), extra)


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))
