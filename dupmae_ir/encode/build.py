"""Stage 2 of indexing: the FAISS index and the Lucene impact index built from finished chunk files,
in a marked temporary folder renamed into place (:func:`build_indexes`)."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from ..dense_index import DenseIndexSpec, build_dense_index
from ..index import INDEX_META as META_NAME

EMPTY_TOKEN = "[DUPMAE_EMPTY]"
RETRY_FIX = "free disk space (or raise the file-size limit) and re-run the same command: finished chunks are kept"


def _build_lucene(vector_dir: Path, out_dir: Path, threads: int, expected: int, log_path: Path) -> dict:
    """Anserini impact index over a folder of ``JsonVectorCollection`` files (a child process that
    dies with this one). On failure its log is kept at ``log_path`` and named in the error."""
    from .._child import child_command, read_peak_rss
    from ..errors import IndexFormatError
    from ..java import java_env

    cmd = child_command("pyserini.index.lucene", "--collection", "JsonVectorCollection", "--input", vector_dir,
                        "--index", out_dir, "--generator", "DefaultLuceneDocumentGenerator", "--threads", threads,
                        "--impact", "--pretokenized", peak_rss=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=java_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = read_peak_rss(proc.stderr)  # the indexer's own (the JVM runs inside it)
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
            "flags": ["--impact", "--pretokenized"], "empty_placeholder_token": EMPTY_TOKEN,
            "anserini_counters": counters, "seconds": round(seconds, 1), "anserini_peak_rss_mib": peak and round(peak)}


def build_indexes(chunk_dirs: list[tuple[Path, list[str]]], claim, settings: dict, counts: dict,
                   dense_spec: DenseIndexSpec, threads: int, extra: dict) -> Path:
    """Build the claimed output folder (atomically) from chunk files. ``chunk_dirs``: (folder, chunk
    names in order); ``claim``: the :class:`~dupmae_ir.outputs.OutputClaim` of the output;
    ``dense_spec``: the FAISS index type and its parameters (:mod:`dupmae_ir.dense_index`)."""
    from .. import __version__
    from ..outputs import remove_temp_dir
    from ..provenance import provenance, write_json

    start = time.perf_counter()
    ordered = [(folder, name) for folder, names in chunk_dirs for name in names]
    ordered.sort(key=lambda fn: fn[1])  # global chunk numbers: corpus order, whatever the shard
    with claim.atomic() as tmp:
        dense_info = impact_info = None
        if settings["dense"]:
            dense_info = build_dense_index([f / f"{n}.npy" for f, n in ordered],
                                           [f / f"{n}.docid" for f, n in ordered], tmp / "dense", dense_spec)
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
            corpus=settings["corpus"], inputs=settings.get("inputs"),  # checkpoint and corpus fingerprints
            docs=counts["docs"], empty_text_docs=counts["empty_text_docs"],
            empty_impact_docs=counts["empty_impact_docs"],
            empty_impact_policy=f"placeholder token {EMPTY_TOKEN!r} with weight 1 (matches no query)",
            dtype=settings["dtype"], batch_size=settings["batch_size"],
            chunk_size=settings["chunk_size"], dense=dense_info, impact=impact_info,
            toolkit_version=__version__, build_seconds=round(time.perf_counter() - start, 2), **extra,
        )
        write_json(tmp / META_NAME, meta)
    return claim.path
