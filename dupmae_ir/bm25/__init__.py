"""BM25 baseline with Pyserini, on any data-layer collection.

Indexing follows Pyserini's BEIR "flat" convention: one ``JsonCollection`` document per corpus entry
whose ``contents`` is title and text joined (:func:`dupmae_ir.data.doc_text`), Lucene's default
English analyzer, BM25 with k1 = 0.9, b = 0.4. On SciFact test this gives nDCG@10 0.679, Pyserini's
published flat BM25 number (checked by ``tests/test_bm25.py``).

Library::

    from dupmae_ir.bm25 import build_bm25_index, bm25_search
    index = build_bm25_index(resolve("beir/scifact", data_dir=...), "indexes/bm25/scifact")
    run = bm25_search(index, queries, hits=1000)   # {qid: [(docid, score), ...]}

CLI (``__main__``): ``python -m dupmae_ir.bm25 --corpus NAME --index DIR [--topics NAME_OR_FILE --output run.trec]``.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from ..outputs import OutputKind
from ..runs import Run, rank_hits

BM25_META = "dupmae_bm25.json"
BM25_OUTPUT = OutputKind("BM25 index", BM25_META, ("bm25_index",))


def build_bm25_index(collection, index_dir: str | os.PathLike, threads: int = 2, force: bool = False,
                     progress: bool = True) -> Path:
    """Build (or reuse) a Lucene BM25 index of a collection (a :class:`dupmae_ir.data.Collection` or a
    name/path for :func:`dupmae_ir.data.resolve`). Written to a temporary folder, then renamed; a
    ``dupmae_bm25.json`` provenance file is written inside, with the corpus' fingerprint. Reused when that
    file exists (unless ``force``) and records this corpus' fingerprint; one built from another is refused."""
    from tqdm import tqdm

    from .._child import child_command
    from ..data import doc_text, resolve
    from ..errors import UserError
    from ..fingerprint import changes, corpus_fingerprint
    from ..java import java_env
    from ..outputs import atomic_output_dir, is_output
    from ..provenance import provenance, write_json

    collection = resolve(collection)
    index_dir = Path(index_dir)
    inputs = {"corpus": corpus_fingerprint(collection)}
    if is_output(index_dir, BM25_OUTPUT) and not force:
        recorded = json.loads((index_dir / BM25_META).read_text(encoding="utf-8")).get("inputs")
        if recorded is not None and recorded != inputs:  # an index from before fingerprints is taken as is
            raise UserError(index_dir, "is a BM25 index of another corpus: "
                                       + "; ".join(changes({"inputs": recorded}, {"inputs": inputs})),
                            "pass another index folder, or remove this one to build it again")
        return index_dir
    with atomic_output_dir(index_dir, BM25_OUTPUT, overwrite=force) as tmp:
        docs_dir = tmp / "_jsonl"
        docs_dir.mkdir()
        n = 0
        with open(docs_dir / "docs.jsonl", "w", encoding="utf-8") as fh:
            for doc in tqdm(collection.iter_docs(), desc=f"bm25 docs {collection.name}", unit="doc",
                            total=collection.doc_count(), disable=not progress):
                fh.write(json.dumps({"id": doc.id, "contents": doc_text(doc)}, ensure_ascii=False) + "\n")
                n += 1
        lucene = tmp / "lucene"
        cmd = child_command("pyserini.index.lucene", "--collection", "JsonCollection", "--input", docs_dir,
                            "--index", lucene, "--generator", "DefaultLuceneDocumentGenerator", "--threads", threads,
                            "--storePositions", "--storeDocvectors")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=java_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"BM25 indexing of {collection.name} failed (exit {proc.returncode}):\n"
                               f"{' '.join(cmd)}\n{proc.stderr[-3000:]}")
        for p in docs_dir.iterdir():
            p.unlink()
        docs_dir.rmdir()
        for p in lucene.iterdir():  # flatten: the index files live in index_dir itself
            p.rename(tmp / p.name)
        lucene.rmdir()
        write_json(tmp / BM25_META, provenance(artifact="bm25_index", collection=collection.name, docs=n, inputs=inputs,
                                               contents="title text (doc_text)", analyzer="Lucene default English",
                                               seconds=round(time.perf_counter() - t0, 1)))
    return index_dir


class BM25Searcher:
    """Pyserini ``LuceneSearcher`` with BM25 (k1, b); hits turned into Python tuples per batch."""

    def __init__(self, index_dir: str | os.PathLike, k1: float = 0.9, b: float = 0.4, threads: int = 2):
        from ..java import start_jvm

        start_jvm()
        from pyserini.search.lucene import LuceneSearcher

        self.searcher = LuceneSearcher(str(index_dir))
        self.searcher.set_bm25(k1, b)
        self.threads = threads

    def search(self, queries: dict[str, str], hits: int = 1000, batch_size: int = 256,
               drop_query_id: bool = False, progress: bool = True) -> Run:
        from tqdm import tqdm

        run: Run = {}
        items = list(queries.items())
        extra = 1 if drop_query_id else 0
        for start in tqdm(range(0, len(items), batch_size), desc="bm25 search", disable=not progress):
            chunk = items[start:start + batch_size]
            qids = [str(q) for q, _ in chunk]
            res = self.searcher.batch_search([t for _, t in chunk], qids, k=hits + extra, threads=self.threads)
            for q in qids:
                scores = {h.docid: float(h.score) for h in res.get(q, []) if not (drop_query_id and h.docid == q)}
                run[q] = rank_hits(scores, hits)
            del res
        return run


def bm25_search(index_dir, queries: dict[str, str], hits: int = 1000, k1: float = 0.9, b: float = 0.4,
                threads: int = 2, drop_query_id: bool = False, progress: bool = True) -> Run:
    """BM25 search of ``{qid: text}``; returns ``{qid: [(docid, score), ...]}`` best first (ties by docid)."""
    return BM25Searcher(index_dir, k1, b, threads).search(queries, hits, drop_query_id=drop_query_id,
                                                         progress=progress)
