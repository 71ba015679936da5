"""Encode a corpus into a FAISS index and a Lucene impact index in one pass; pre-encode queries.

    python -m dupmae_ir.encode --corpus scifact-path --encoder CKPT --output indexes/scifact
    python -m dupmae_ir.encode --queries beir/scifact --split test --encoder CKPT --output q/scifact-test
    python -m dupmae_ir.encode merge --inputs shard0 shard1 --output indexes/full

Output folder (``--output DIR``):

- ``DIR/dense/index`` + ``DIR/dense/docid``: what Pyserini's ``FaissSearcher`` reads (flat inner
  product by default; ``--faiss hnsw|pq``); vectors are DupMAE's ``h_hat = W^T h_cls`` (paper 3.4);
- ``DIR/impact/``: a Lucene impact index built by Anserini (``JsonVectorCollection``, ``--impact
  --pretokenized``) from ``round(s_d * mu_d)`` on the document's top-k tokens (paper eq. 7, 3.4);
- ``DIR/dupmae_index.json``: provenance (encoder, the full ``RetrieverConfig`` with ``doc_scale`` /
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
  one unsharded run. Several GPUs on one machine: one process per GPU (``--device cuda:i
  --shard-id i``), then ``merge``;
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
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .errors import add_debug_flag, run_command

log = logging.getLogger(__name__)

from .index import (INDEX_META as META_NAME, INDEX_OUTPUT, QUERIES_META as QUERIES_META_NAME, QUERIES_OUTPUT,
                    QUERY_IMPACTS, QUERY_PICKLE, QUERY_ROWS, QUERY_TOPICS, QUERY_VECTORS, SHARD_OUTPUT)
EMPTY_TOKEN = "[DUPMAE_EMPTY]"
FAISS_KINDS = ("flat", "hnsw", "pq")
STATE_NAME = "state.json"


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
RETRY_FIX = "free disk space (or raise the file-size limit) and re-run the same command: finished chunks are kept"


def _write_bytes_atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename to ``path``; a failed write (disk full) is one :class:`OutputError`."""
    from .errors import OutputError

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
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


def impact_line(doc_id: str, vector: dict[str, int]) -> str:
    """One ``JsonVectorCollection`` line; an empty vector gets the :data:`EMPTY_TOKEN` placeholder."""
    return json.dumps({"id": doc_id, "contents": "", "vector": vector or {EMPTY_TOKEN: 1}}, ensure_ascii=False)


def _settings(enc, corpus: str, batch_size: int, chunk_size: int, shard_id: int, shard_num: int,
              dense: bool, impact: bool) -> dict:
    """Everything that decides the chunk files' bytes: a changed value invalidates a work folder."""
    from .modeling.backbone import resolve_model_path

    path = resolve_model_path(enc.model_name_or_path)
    return {
        "encoder": str(Path(path).resolve()) if Path(path).exists() else path,
        "retriever": asdict(enc.config),
        "dtype": enc.dtype_name,
        "device": enc.device,
        "corpus": corpus,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "shard_id": shard_id,
        "shard_num": shard_num,
        "dense": dense,
        "impact": impact,
    }


# ------------------------------------------------------------------------------------------------
# stage 1: encode chunks (resumable)
# ------------------------------------------------------------------------------------------------
def _encode_chunks(enc, collection, work: Path, settings: dict, progress: bool, data_stats) -> dict:
    """Encode this shard's chunks into ``work/chunks``; return counts. Finished chunks are skipped."""
    from tqdm import tqdm

    from .data import doc_text

    chunk_dir = work / "chunks"
    (chunk_dir / "vectors").mkdir(parents=True, exist_ok=True)
    chunk_size, shard_id, shard_num = settings["chunk_size"], settings["shard_id"], settings["shard_num"]
    counts = {"docs": 0, "empty_text_docs": 0, "empty_impact_docs": 0, "chunks": 0, "resumed_chunks": 0,
              "total_chunks": 0, "encode_seconds": 0.0, "encoded_docs": 0}
    total = collection.doc_count()
    if total is not None and shard_num > 1:
        total = None  # the shard's share is not known exactly up front
    bar = tqdm(total=total, unit="doc", desc=f"encode{'' if shard_num == 1 else f' shard {shard_id}/{shard_num}'}",
               disable=not progress, dynamic_ncols=True)
    try:
        for number, docs in enumerate(_chunks(collection.iter_docs(empty="keep", stats=data_stats), chunk_size)):
            counts["total_chunks"] = number + 1
            if number % shard_num != shard_id:
                continue
            name = f"{number:07d}"
            done = chunk_dir / f"{name}.done"
            if done.is_file():
                info = json.loads(done.read_text())
                for key in ("docs", "empty_text_docs", "empty_impact_docs"):
                    counts[key] += info[key]
                counts["chunks"] += 1
                counts["resumed_chunks"] += 1
                bar.update(len(docs))
                continue
            texts = [doc_text(d) for d in docs]
            start = time.perf_counter()
            out = enc.encode_docs(texts, batch_size=settings["batch_size"])  # dense (n, d), impacts [{tok: int}]
            counts["encode_seconds"] += time.perf_counter() - start
            counts["encoded_docs"] += len(docs)
            ids = [d.id for d in docs]
            if settings["dense"]:
                import numpy as np

                def save(p, array=out.dense):
                    with open(p, "wb") as fh:  # a file object: np.save would append ".npy" to a name
                        np.save(fh, array)

                _write_bytes_atomic(chunk_dir / f"{name}.npy", save)
            _write_bytes_atomic(chunk_dir / f"{name}.docid", lambda p: p.write_text("".join(i + "\n" for i in ids)))
            empty_impact = sum(1 for v in out.impacts if not v)
            if settings["impact"]:
                lines = "".join(impact_line(i, v) + "\n" for i, v in zip(ids, out.impacts))
                _write_bytes_atomic(chunk_dir / "vectors" / f"{name}.jsonl", lambda p: p.write_text(lines, encoding="utf-8"))
            info = {"docs": len(docs), "empty_text_docs": sum(1 for t in texts if not t),
                    "empty_impact_docs": empty_impact}
            _write_bytes_atomic(done, lambda p: p.write_text(json.dumps(info)))  # the chunk counts only now
            for key in info:
                counts[key] += info[key]
            counts["chunks"] += 1
            bar.update(len(docs))
            if counts["encode_seconds"]:
                bar.set_postfix(enc_docs_s=f"{counts['encoded_docs'] / counts['encode_seconds']:.1f}")
    finally:
        bar.close()
    return counts


# ------------------------------------------------------------------------------------------------
# stage 2: build the indexes from chunk files
# ------------------------------------------------------------------------------------------------
def _build_faiss(npy_files: list[Path], docid_files: list[Path], out_dir: Path, kind: str,
                 hnsw_m: int = 32, pq_m: int | None = None) -> dict:
    """FAISS index (inner product) + docid list, as Pyserini's ``FaissSearcher`` reads them."""
    import faiss
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    first = np.load(npy_files[0]) if npy_files else None
    dim = first.shape[1] if first is not None else 0
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    elif kind == "pq":
        m = pq_m or max(1, dim // 4)
        if dim % m:
            raise ValueError(f"--pq-m {m} must divide the dense dimension {dim}.")
        index = faiss.IndexPQ(dim, m, 8, faiss.METRIC_INNER_PRODUCT)
        sample, n = [], 0
        for f in npy_files:  # train on the first vectors (deterministic), up to 65,536
            sample.append(np.load(f))
            n += len(sample[-1])
            if n >= 65536:
                break
        train = np.ascontiguousarray(np.concatenate(sample)[:65536], dtype=np.float32)  # (n, d)
        if len(train) < 256:
            raise ValueError(f"--faiss pq needs at least 256 documents to train its codebooks; got {len(train)}.")
        index.train(train)
    else:
        raise ValueError(f"faiss={kind!r}; valid: {FAISS_KINDS}")
    with open(out_dir / "docid", "w", encoding="utf-8") as ids_out:
        for npy, ids in zip(npy_files, docid_files):
            vectors = np.ascontiguousarray(np.load(npy), dtype=np.float32)  # (n, d)
            index.add(vectors)
            ids_out.write(ids.read_text(encoding="utf-8"))
    try:
        faiss.write_index(index, str(out_dir / "index"))
    except RuntimeError as e:  # FAISS reports a failed fwrite (disk full) as a C++ exception
        from .errors import OutputError

        raise OutputError(out_dir / "index", f"could not be written ({str(e).splitlines()[-1][:200]})", RETRY_FIX) from e
    return {"path": "dense", "faiss": kind, "dim": int(dim), "metric": "inner_product", "docs": int(index.ntotal)}


def _build_lucene(vector_dir: Path, out_dir: Path, threads: int, expected: int, log_path: Path) -> dict:
    """Anserini impact index over a folder of ``JsonVectorCollection`` files (a child process that
    dies with this one). On failure its log is kept at ``log_path`` and named in the error."""
    from ._child import child_command
    from .errors import IndexFormatError
    from .java import java_env

    cmd = child_command("pyserini.index.lucene", "--collection", "JsonVectorCollection", "--input", vector_dir,
                        "--index", out_dir, "--generator", "DefaultLuceneDocumentGenerator", "--threads", threads,
                        "--impact", "--pretokenized")
    proc = subprocess.run(cmd, env=java_env(), capture_output=True, text=True)
    log_text = proc.stdout + proc.stderr
    # Anserini prints counters with thousands separators ("indexed: 5,183")
    counters = {k: int(v.replace(",", "")) for k, v in
                re.findall(r"(indexed|unindexable|empty|skipped|errors):\s+([\d,]+)", log_text)}
    if proc.returncode != 0 or counters.get("indexed") != expected:
        log_path.write_text(" ".join(cmd) + "\n\n" + log_text, encoding="utf-8")
        what = (f"Anserini impact indexing failed (exit {proc.returncode})" if proc.returncode else
                f"Anserini indexed {counters.get('indexed')} documents, expected {expected} (counters {counters})")
        raise IndexFormatError(out_dir.parent.name, what, f"read its log {log_path}; {RETRY_FIX}")
    log_path.unlink(missing_ok=True)  # a failed earlier attempt's log
    return {"path": "impact", "collection": "JsonVectorCollection", "generator": "DefaultLuceneDocumentGenerator",
            "flags": ["--impact", "--pretokenized"], "empty_placeholder_token": EMPTY_TOKEN, "anserini_counters": counters}


def _build_indexes(chunk_dirs: list[tuple[Path, list[str]]], claim, settings: dict, counts: dict,
                   faiss_kind: str, threads: int, hnsw_m: int, pq_m: int | None, extra: dict) -> Path:
    """Build the claimed output folder (atomically) from chunk files. ``chunk_dirs``: (folder, chunk
    names in order); ``claim``: the :class:`~dupmae_ir.outputs.OutputClaim` of the output."""
    from . import __version__
    from .outputs import remove_temp_dir
    from .provenance import provenance, write_json

    start = time.perf_counter()
    ordered = [(folder, name) for folder, names in chunk_dirs for name in names]
    ordered.sort(key=lambda fn: fn[1])  # global chunk numbers: corpus order, whatever the shard
    with claim.atomic() as tmp:
        dense_info = impact_info = None
        if settings["dense"]:
            dense_info = _build_faiss([f / f"{n}.npy" for f, n in ordered], [f / f"{n}.docid" for f, n in ordered],
                                      tmp / "dense", faiss_kind, hnsw_m, pq_m)
        if settings["impact"]:
            folders = {f for f, _ in ordered}
            links = None
            if len(folders) == 1:
                vector_dir = next(iter(folders)) / "vectors"
            else:  # several shards: one input folder of links for Anserini
                links = claim.temp_dir("vectors")
                vector_dir = links / "links"
                vector_dir.mkdir()
                for f, n in ordered:
                    os.symlink((f / "vectors" / f"{n}.jsonl").resolve(), vector_dir / f"{n}.jsonl")
            try:
                impact_info = _build_lucene(vector_dir, tmp / "impact", threads, counts["docs"],
                                            claim.sibling("anserini.log"))
            finally:
                if links is not None:
                    remove_temp_dir(links)
        retriever = settings["retriever"]
        meta = provenance(
            kind="dupmae_index",
            encoder=settings["encoder"],
            retriever=retriever,
            doc_scale=retriever["doc_scale"], query_scale=retriever["query_scale"],
            doc_topk=retriever["doc_topk"], query_topk=retriever["query_topk"], activation=retriever["activation"],
            corpus=settings["corpus"],
            docs=counts["docs"], empty_text_docs=counts["empty_text_docs"],
            empty_impact_docs=counts["empty_impact_docs"],
            empty_impact_policy=f"placeholder token {EMPTY_TOKEN!r} with weight 1 (matches no query)",
            dtype=settings["dtype"], device=settings["device"], batch_size=settings["batch_size"],
            chunk_size=settings["chunk_size"], dense=dense_info, impact=impact_info,
            toolkit_version=__version__, build_seconds=round(time.perf_counter() - start, 2), **extra,
        )
        write_json(tmp / META_NAME, meta)
    return claim.path


def _remove_work(work: Path) -> None:
    """Remove a resumable work folder: only one the toolkit made (it holds ``state.json``)."""
    if (work / STATE_NAME).is_file():
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------
def encode_corpus(corpus, output, encoder="default", batch_size: int = 32, dtype: str = "auto",
                  dense: bool = True, impact: bool = True, faiss: str = "flat", device: str = "cpu",
                  chunk_size: int = 4096, shard_id: int = 0, shard_num: int = 1, threads: int | None = None,
                  data_dir=None, progress: bool = True, hnsw_m: int = 32, pq_m: int | None = None,
                  overwrite: bool = False) -> Path:
    """Encode ``corpus`` (a collection name or path, see :mod:`dupmae_ir.data`) into ``output``.

    ``encoder``: a checkpoint path, ``"default"``, or a ready :class:`~dupmae_ir.encoder.DupMAEEncoder`
    (a path is loaded only after ``output`` is checked and locked). ``overwrite``: replace an earlier
    index at ``output`` (a folder the toolkit did not write is never replaced). Returns ``output``.
    With ``shard_num > 1`` the output is a shard folder for :func:`merge_shards`. See the module
    docstring for layout, resumption and the empty-vector policy.
    """
    from .data import resolve
    from .data.readers import CorpusStats
    from .encoder import DupMAEEncoder
    from .outputs import claim_output_dir
    from .provenance import provenance, write_json

    if not dense and not impact:
        raise ValueError("nothing to do: dense=False and impact=False (drop --dense-only or --impact-only).")
    if faiss not in FAISS_KINDS:
        raise ValueError(f"faiss={faiss!r}; valid: {FAISS_KINDS}")
    if not (0 <= shard_id < shard_num):
        raise ValueError(f"--shard-id {shard_id} must be in [0, --shard-num {shard_num}).")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size ({batch_size}) and chunk_size ({chunk_size}) must be >= 1.")
    collection = resolve(corpus, data_dir=data_dir)
    if not collection.has_corpus():
        from .data import DataError

        raise DataError(corpus, "this collection has no documents to encode", "pass a collection with a corpus")
    spec = SHARD_OUTPUT if shard_num > 1 else INDEX_OUTPUT
    with claim_output_dir(output, spec, overwrite) as claim:
        enc = encoder if isinstance(encoder, DupMAEEncoder) else DupMAEEncoder(str(encoder), device=device, dtype=dtype)
        settings = _settings(enc, str(corpus), batch_size, chunk_size, shard_id, shard_num, dense, impact)
        work = claim.sibling("partial")
        state_path = work / STATE_NAME
        if state_path.is_file():
            if json.loads(state_path.read_text()) == settings:
                log.info("resuming from %s", work)
            else:
                log.warning("%s was made by a different command: starting afresh", work)
                _remove_work(work)
        if not state_path.is_file():
            work.mkdir(parents=True, exist_ok=True)
            write_json(state_path, settings)

        stats = CorpusStats()
        start = time.perf_counter()
        counts = _encode_chunks(enc, collection, work, settings, progress, stats)
        if counts["docs"] == 0 and shard_num == 1:
            from .data import DataError

            raise DataError(corpus, "no documents found", "pass a collection with documents")
        names = sorted(p.name[:-5] for p in (work / "chunks").glob("*.done"))
        extra = {"shard_id": shard_id, "shard_num": shard_num, "total_chunks": counts["total_chunks"],
                 "resumed_chunks": counts["resumed_chunks"], "encode_seconds": round(counts["encode_seconds"], 2),
                 "encode_docs_per_s": round(counts["encoded_docs"] / counts["encode_seconds"], 2)
                 if counts["encode_seconds"] else None,
                 "wall_seconds_encode": round(time.perf_counter() - start, 2)}
        if shard_num > 1:
            with claim.atomic() as tmp:
                shutil.move(str(work / "chunks"), str(tmp / "chunks"))
                write_json(tmp / META_NAME, provenance(kind="dupmae_shard", settings=settings, chunk_names=names,
                                                       **{**counts, **extra}))
        else:
            _build_indexes([(work / "chunks", names)], claim, settings, counts, faiss, threads or _threads(), hnsw_m,
                           pq_m, extra)
        _remove_work(work)
        return claim.path


def merge_shards(inputs: list, output, faiss: str = "flat", threads: int | None = None,
                 hnsw_m: int = 32, pq_m: int | None = None, overwrite: bool = False) -> Path:
    """Build the indexes of ``output`` from the shard folders of ``--shard-id/--shard-num`` runs.

    Checks that the shards come from the same settings and cover every shard id and chunk once.
    """
    from .errors import IndexFormatError
    from .index import read_json
    from .outputs import claim_output_dir

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
        return _build_indexes([(f / "chunks", m["chunk_names"]) for f, m in metas], claim, settings, counts,
                              faiss, threads or _threads(), hnsw_m, pq_m, extra)


LUCENE_MAX_CLAUSES = 1024  # Lucene's default IndexSearcher.maxClauseCount (stock Pyserini keeps it)


def encode_queries(queries: dict[str, str], encoder, output_dir, batch_size: int = 64,
                   dtype: str = "fp32", device: str = "cpu", max_impact_terms: int | None = LUCENE_MAX_CLAUSES,
                   overwrite: bool = False) -> Path:
    """Pre-encode queries; returns ``output_dir``. Files:

    - ``dense/embedding.npy`` (Q, d) float32 + ``dense/queries.jsonl`` (``{"id", "text"}`` per row):
      what :mod:`dupmae_ir.search` reads (``--encoded-queries output_dir``);
    - ``dense/embedding.pkl``: the same rows as a pandas DataFrame (``id``, ``text``, ``embedding``),
      for stock Pyserini's ``--encoded-queries output_dir/dense`` only: a pickle runs code when loaded,
      so the toolkit writes it but never reads it;
    - ``impact.jsonl``: ``{"id", "contents": query text, "vector": {token: int}}`` keyed by text, for
      the impact ``--encoder output_dir/impact.jsonl``;
    - ``topics.tsv``: ``qid<TAB>text`` for ``--topics``; ``dupmae_queries.json``: provenance.
    Weights use ``query_topk`` and ``query_scale`` of the encoder's ``RetrieverConfig``. Stock
    Pyserini searches with Lucene's default limit of 1,024 query terms (``TooManyClauses`` beyond), so
    the ``.jsonl`` keeps each query's ``max_impact_terms`` largest weights (None: all); the number of
    queries cut is recorded in ``dupmae_queries.json``. ``dupmae_ir.search`` raises the limit instead.
    """
    import numpy as np
    import pandas as pd

    from .data import check_id
    from .encoder import DupMAEEncoder
    from .outputs import atomic_output_dir, check_output_dir
    from .provenance import provenance, write_json

    check_output_dir(output_dir, QUERIES_OUTPUT, overwrite)  # before the model loads
    for qid in queries:
        check_id(qid, "queries", "query id")
    enc = encoder if isinstance(encoder, DupMAEEncoder) else DupMAEEncoder(str(encoder), device=device, dtype=dtype)
    qids = list(queries)
    texts = [queries[q] for q in qids]
    out = enc.encode_queries(texts, batch_size=batch_size)  # dense (Q, d), impacts [{tok: int}]
    cut = 0
    if max_impact_terms:
        for i, vector in enumerate(out.impacts):
            if len(vector) > max_impact_terms:
                cut += 1
                keep = sorted(vector.items(), key=lambda kv: (-kv[1], kv[0]))[:max_impact_terms]
                kept = {token for token, _ in keep}
                out.impacts[i] = {t: w for t, w in vector.items() if t in kept}  # vocabulary order kept
    rows = []  # (qid, key text, dense, vector); Pyserini looks queries up by their (stripped) text
    for i, (qid, text) in enumerate(zip(qids, texts)):
        rows.append((qid, text, out.dense[i], out.impacts[i]))
        clean = " ".join(text.split())  # the form written to topics.tsv (no tabs or newlines)
        if clean != text.strip():
            rows.append((qid, clean, out.dense[i], out.impacts[i]))
    with atomic_output_dir(output_dir, QUERIES_OUTPUT, overwrite) as tmp:
        (tmp / "dense").mkdir()
        vectors = np.stack([r[2] for r in rows]).astype(np.float32) if rows else np.zeros((0, enc.model.dense_dim),
                                                                                           np.float32)
        with open(tmp / QUERY_VECTORS, "wb") as fh:
            np.save(fh, vectors, allow_pickle=False)
        with open(tmp / QUERY_ROWS, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"id": r[0], "text": r[1]}, ensure_ascii=False) + "\n" for r in rows)
        frame = pd.DataFrame({"id": [r[0] for r in rows], "text": [r[1] for r in rows],
                              "embedding": [r[2] for r in rows]})
        frame.to_pickle(tmp / QUERY_PICKLE)  # for stock Pyserini; never read by the toolkit
        with open(tmp / QUERY_IMPACTS, "w", encoding="utf-8") as f:
            for qid, text, _, vector in rows:
                f.write(json.dumps({"id": qid, "contents": text, "vector": vector}, ensure_ascii=False) + "\n")
        with open(tmp / QUERY_TOPICS, "w", encoding="utf-8") as f:
            for qid, text in zip(qids, texts):
                f.write(f"{qid}\t{' '.join(text.split())}\n")
        write_json(tmp / QUERIES_META_NAME, provenance(
            kind="dupmae_queries", encoder=enc.model_name_or_path, retriever=asdict(enc.config),
            query_scale=enc.config.query_scale, query_topk=enc.config.query_topk, queries=len(qids),
            max_impact_terms=max_impact_terms, queries_cut_to_max_impact_terms=cut, dtype=enc.dtype_name,
            files={"dense": QUERY_VECTORS, "dense_rows": QUERY_ROWS, "dense_pyserini": QUERY_PICKLE,
                   "impact": QUERY_IMPACTS, "topics": QUERY_TOPICS}))
    return Path(output_dir)


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def add_encoder_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("encoder")
    g.add_argument("--encoder", default="default",
                   help="DupMAE checkpoint folder (HF masked LM + dupmae_config.json), or 'default' (MiniLM-L6)")
    g.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (length-sorted, dynamic padding)")
    # the same list as encoder.DTYPES (a test checks), written out so that --help does not import torch
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8", "int8-head"],
                   help="auto: bf16/fp16 on GPUs, bf16 on CPUs with native bf16 instructions (AVX512-BF16/AMX), "
                        "else fp32 (decided from the hardware, never from a timing; bench/encode_dtypes.py measures); "
                        "int8: dynamic int8 quantisation of every linear layer (CPU; costs quality); "
                        "int8-head: of the MLM head only (CPU; dense vectors exact, ~1.6x faster)")
    g.add_argument("--device", default="cpu", help="cpu or cuda[:i]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dupmae_ir.encode",
        description="Encode a corpus with DupMAE into a FAISS index (dense [CLS]) and a Lucene impact index "
                    "(bag-of-words weights) in one pass, and/or pre-encode queries for stock Pyserini. "
                    "`python -m dupmae_ir.encode merge --help` merges shard folders.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = parser.add_argument_group("input / output")
    io.add_argument("--corpus", help="collection: 'default' (bundled SciFact), an ir_datasets id "
                                     "(msmarco-passage, beir/...), a BEIR folder or a JSONL collection")
    io.add_argument("--queries", help="queries to pre-encode: a collection name/folder (with --split) or a queries file")
    io.add_argument("--split", default=None, help="query split for --queries (default: the collection's evaluation split)")
    io.add_argument("--data-dir", default=None, help="folder of local BEIR collections tried first for --corpus/--queries")
    io.add_argument("--output", required=True, help="output folder (indexes; or the encoded queries when only --queries)")
    io.add_argument("--queries-output", default=None, help="folder for encoded queries (default: OUTPUT/queries "
                                                           "with --corpus, else OUTPUT)")
    add_encoder_args(parser)
    ix = parser.add_argument_group("indexes")
    only = ix.add_mutually_exclusive_group()
    only.add_argument("--dense-only", action="store_true", help="write only the FAISS index")
    only.add_argument("--impact-only", action="store_true", help="write only the Lucene impact index")
    ix.add_argument("--faiss", default="flat", choices=FAISS_KINDS, help="FAISS index type (inner product)")
    ix.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree (--faiss hnsw)")
    ix.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantisers (--faiss pq; default dim/4)")
    ix.add_argument("--threads", type=int, default=None, help="Anserini indexing threads (default: cores, max 8)")
    sc = parser.add_argument_group("scale")
    sc.add_argument("--chunk-size", type=int, default=4096, help="documents per resumable chunk")
    sc.add_argument("--shard-id", type=int, default=0, help="this shard (0-based); with --shard-num > 1 "
                                                            "writes a shard folder for `merge`")
    sc.add_argument("--shard-num", type=int, default=1, help="number of shards")
    sc.add_argument("--no-progress", action="store_true", help="no progress bar")
    io.add_argument("--overwrite", action="store_true",
                    help="replace an earlier output of this command at --output (never a folder dupmae_ir did not write)")
    add_debug_flag(parser)
    return parser


def build_merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dupmae_ir.encode merge",
        description="Merge the shard folders of `--shard-id/--shard-num` runs into one output folder "
                    "(FAISS + Lucene impact index, corpus order), identical to an unsharded run.")
    parser.add_argument("--inputs", nargs="+", required=True, help="shard folders")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--faiss", default="flat", choices=FAISS_KINDS)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--pq-m", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier index at --output")
    add_debug_flag(parser)
    return parser


def tokenizer_parallelism(device: str) -> str:
    """Default of ``TOKENIZERS_PARALLELISM`` for an encoding run on ``device`` (a user's setting wins).

    On a GPU the tokeniser is the bottleneck: its threads made encoding 2.5x faster on an H200 host
    (README, "Measured once on a GPU"). On a CPU its threads would compete with torch's for the cores."""
    return "true" if str(device).startswith("cuda") else "false"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["merge"]:
        args = build_merge_parser().parse_args(argv[1:])
        out = merge_shards(args.inputs, args.output, faiss=args.faiss, threads=args.threads,
                           hnsw_m=args.hnsw_m, pq_m=args.pq_m, overwrite=args.overwrite)
        print(out)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.corpus and not args.queries:
        parser.error("give --corpus (to build indexes) and/or --queries (to pre-encode queries)")
    from .outputs import absolute, check_output_dir

    # every input and output is checked before a model loads
    output = absolute(args.output)
    if args.corpus:
        check_output_dir(output, SHARD_OUTPUT if args.shard_num > 1 else INDEX_OUTPUT, args.overwrite)
    queries = qout = None
    if args.queries:
        from .data import resolve

        queries = resolve(args.queries, data_dir=args.data_dir).queries(args.split)
        qout = absolute(args.queries_output) if args.queries_output else (output / "queries" if args.corpus else output)
        if not (args.corpus and output in qout.parents):  # inside a new index folder it cannot exist yet
            check_output_dir(qout, QUERIES_OUTPUT, args.overwrite)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", tokenizer_parallelism(args.device))
    if args.corpus:
        out = encode_corpus(args.corpus, output, encoder=args.encoder, dtype=args.dtype, device=args.device,
                            batch_size=args.batch_size, dense=not args.impact_only, impact=not args.dense_only,
                            faiss=args.faiss, chunk_size=args.chunk_size, shard_id=args.shard_id,
                            shard_num=args.shard_num, threads=args.threads, data_dir=args.data_dir,
                            progress=not args.no_progress, hnsw_m=args.hnsw_m, pq_m=args.pq_m,
                            overwrite=args.overwrite)
        print(out)
    if queries is not None:
        # queries are cheap: always the fp32 reference
        print(encode_queries(queries, args.encoder, qout, batch_size=args.batch_size, dtype="fp32", device=args.device,
                             overwrite=args.overwrite))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
