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

Library::

    from dupmae_ir.search import DupMAESearcher
    searcher = DupMAESearcher("indexes/default/scifact")
    runs = searcher.search_all(queries, modes=("dense", "impact", "hybrid"), hits=1000)
    # runs["hybrid"][qid] = [(docid, score), ...] best first

CLI: ``python -m dupmae_ir.search --index DIR --topics FILE_OR_NAME [--mode hybrid] --output runs/x.trec``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from .errors import add_debug_flag, run_command
from .index import INDEX_META, IndexInfo, check_lucene_count, load_encoded_queries, load_index  # noqa: F401
from .runs import FUSIONS, FusionConfig, Run, fuse, rank_hits, read_trec, write_trec  # noqa: F401

MODES = ("dense", "impact", "hybrid")
# BEIR's evaluation drops a hit whose docid equals the query id on these sets (the query is itself a
# document of the corpus); see BEIR's EvaluateRetrieval.evaluate(ignore_identical_ids=True).
DROP_QUERY_ID_DATASETS = ("arguana", "quora")
MAX_CLAUSES = 1 << 16


def raise_max_clause_count(n: int = MAX_CLAUSES) -> None:
    """Let Lucene take queries with up to ``n`` terms (its default limit is 1024).

    A DupMAE query keeps every positive vocabulary weight unless ``query_topk`` is set: that can be
    thousands of terms, which Lucene rejects with ``TooManyClauses``. The limit is JVM-wide; call
    after :func:`dupmae_ir.java.start_jvm`.
    """
    from jnius import autoclass

    searcher_class = autoclass("org.apache.lucene.search.IndexSearcher")
    if searcher_class.getMaxClauseCount() < n:
        searcher_class.setMaxClauseCount(n)


class _LookupImpactEncoder:
    """Pyserini impact query encoder answering from impacts computed in a batch (``{text: {tok: int}}``)."""

    def __init__(self):
        self.table: dict[str, dict[str, int]] = {}

    def encode(self, text: str, **kwargs) -> dict[str, int]:
        return self.table[text]


class DupMAESearcher:
    """Dense, impact and hybrid search over one encode output folder.

    The index is checked first (:func:`dupmae_ir.index.load_index`: provenance, FAISS/docid/Lucene
    counts), before the JVM or the model start. Queries are encoded once per batch by
    :class:`dupmae_ir.encoder.DupMAEEncoder` (dense vector and integer impacts in one forward pass)
    with the scales, top-k and activation stored in the index; FAISS (read directly, as Pyserini's
    ``FaissSearcher`` does) and Pyserini's ``LuceneImpactSearcher`` then search the batch with
    ``threads`` threads. Java hits become Python tuples at once (millions of live Java objects exhaust
    the JVM heap).
    """

    def __init__(self, index_dir: str | os.PathLike, encoder: str | None = None, threads: int = 1,
                 device: str = "cpu", dtype: str = "fp32", min_idf: float = -1,
                 encoded_queries: str | os.PathLike | None = None):
        import faiss

        self.info = load_index(index_dir)
        # pre-encoded queries (encode_queries' folder) replace live encoding: the same inputs as stock
        # Pyserini's --encoded-queries / impact --encoder *.jsonl, so runs match bit for bit
        self.encoded = load_encoded_queries(encoded_queries) if encoded_queries else None
        self.threads = threads
        self.min_idf = min_idf
        self.faiss_index = self.docids = None
        if self.info.dense is not None:
            self.faiss_index = faiss.read_index(str(self.info.dense / "index"))
            with open(self.info.dense / "docid", encoding="utf-8") as fh:
                self.docids = [line.rstrip("\n") for line in fh]
        self._impact_queries = _LookupImpactEncoder()
        self.impact_searcher = None
        if self.info.impact is not None:
            from .java import start_jvm

            start_jvm()
            from pyserini.search.lucene import LuceneImpactSearcher

            # min_idf=-1 keeps every query token the index holds: the exact dot product. Pyserini's
            # default 0 drops tokens present in every document (idf 0), which changes DupMAE's score.
            self.impact_searcher = LuceneImpactSearcher(str(self.info.impact), self._impact_queries, min_idf=min_idf)
            check_lucene_count(self.info, int(self.impact_searcher.num_docs))
            raise_max_clause_count()
        from .encoder import DupMAEEncoder
        from .modeling.backbone import resolve_model_path
        from .modeling.retriever import RetrieverConfig

        self.encoder_name = encoder or self.info.encoder
        path = resolve_model_path(self.encoder_name)
        config = RetrieverConfig.load(path) if Path(path).is_dir() else RetrieverConfig()
        config = replace(config, **self.info.retriever)  # the index's scales/top-k/activation win
        self.encoder = DupMAEEncoder(self.encoder_name, device=device, dtype=dtype, config=config)

    @property
    def alpha(self) -> float:
        return self.info.alpha

    def _dense_search(self, vectors, k: int) -> list[list[tuple[str, float]]]:
        """FAISS search of (B, d) vectors with ``threads`` threads; torch's thread count is restored
        (FAISS and torch share one OpenMP runtime)."""
        import faiss
        import numpy as np
        import torch

        torch_threads = torch.get_num_threads()
        faiss.omp_set_num_threads(self.threads)
        try:
            scores, rows = self.faiss_index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)  # (B, k)
        finally:
            torch.set_num_threads(torch_threads)
        return [[(self.docids[r], float(s)) for r, s in zip(row, score) if r >= 0]
                for row, score in zip(rows.tolist(), scores.tolist())]

    def _require(self, modes: Sequence[str]) -> None:
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f"modes {bad}; valid: {MODES}")
        from .errors import IndexFormatError

        if self.faiss_index is None and any(m in ("dense", "hybrid") for m in modes):
            raise IndexFormatError(self.info.root, "was built with --impact-only: no dense index for modes "
                                                   f"{list(modes)}", "search with --mode impact")
        if self.impact_searcher is None and any(m in ("impact", "hybrid") for m in modes):
            raise IndexFormatError(self.info.root, "was built with --dense-only: no impact index for modes "
                                                   f"{list(modes)}", "search with --mode dense")

    def search_batch(self, qids: Sequence[str], texts: Sequence[str], modes: Iterable[str] = MODES,
                     hits: int = 1000, depth: int | None = None, fusion: FusionConfig = FusionConfig(),
                     drop_query_id: bool = False) -> dict[str, Run]:
        """Search one batch; returns ``{mode: {qid: [(docid, score), ...]}}``.

        ``depth`` (default ``hits``) is how many hits each side contributes to hybrid fusion
        (Pyserini's ``fusion --hits``). ``drop_query_id`` removes a hit whose docid equals its qid
        (BEIR's convention on ArguAna and Quora) before cutting to ``hits``.
        """
        modes = tuple(modes)
        self._require(modes)
        depth = depth or hits
        extra = 1 if drop_query_id else 0
        qids, texts = [str(q) for q in qids], list(texts)
        # dense (B, d), impacts [{tok: int}]
        enc = self.encoded.batch(texts) if self.encoded else self.encoder.encode_queries(texts)
        need_dense = "dense" in modes or "hybrid" in modes
        need_sparse = "impact" in modes or "hybrid" in modes
        k_dense = max(hits if "dense" in modes else 0, depth if "hybrid" in modes else 0) + extra
        k_sparse = max(hits if "impact" in modes else 0, depth if "hybrid" in modes else 0) + extra
        dense_run = sparse_run = None
        if need_dense:
            dense_run = dict(zip(qids, self._dense_search(enc.dense, k_dense)))
        if need_sparse:
            self._impact_queries.table = dict(zip(texts, enc.impacts))
            res = self.impact_searcher.batch_search(texts, qids, k=k_sparse, threads=self.threads)
            sparse_run = {q: [(h.docid, float(h.score)) for h in res.get(q, [])] for q in qids}
            del res  # release the Java hit objects now
        if drop_query_id:
            dense_run = dense_run and {q: [h for h in v if h[0] != q] for q, v in dense_run.items()}
            sparse_run = sparse_run and {q: [h for h in v if h[0] != q] for q, v in sparse_run.items()}
        out: dict[str, Run] = {}
        if "dense" in modes:
            out["dense"] = {q: rank_hits(dict(dense_run[q]), hits) for q in qids}
        if "impact" in modes:
            out["impact"] = {q: rank_hits(dict(sparse_run[q]), hits) for q in qids}
        if "hybrid" in modes:
            alpha = fusion.alpha_for(self.alpha)
            out["hybrid"] = {
                q: fuse(dense_run[q][:depth], sparse_run[q][:depth], hits, fusion.fusion, alpha,
                        fusion.weight_on_dense, fusion.rrf_k)
                for q in qids
            }
        return out

    def search_all(self, queries: dict[str, str], modes: Iterable[str] = MODES, hits: int = 1000,
                   depth: int | None = None, fusion: FusionConfig = FusionConfig(), batch_size: int = 64,
                   drop_query_id: bool = False, progress: bool = True) -> dict[str, Run]:
        """Search every query (``{qid: text}``) in batches of ``batch_size``, with a progress bar."""
        from tqdm import tqdm

        modes = tuple(modes)
        self._require(modes)
        runs: dict[str, Run] = {m: {} for m in modes}
        items = list(queries.items())
        with tqdm(total=len(items), desc="search", unit="q", disable=not progress) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                part = self.search_batch([q for q, _ in chunk], [t for _, t in chunk], modes, hits, depth,
                                         fusion, drop_query_id)
                for m in modes:
                    runs[m].update(part[m])
                bar.update(len(chunk))
        return runs


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def add_search_args(parser: argparse.ArgumentParser) -> None:
    """Argument groups shared by ``dupmae_ir.search`` and ``dupmae_ir.eval``."""
    g = parser.add_argument_group("search")
    g.add_argument("--mode", nargs="+", choices=MODES, default=["hybrid"],
                   help="what to retrieve with: dense (FAISS), impact (Lucene), hybrid (both, fused). Several "
                        "modes share one query-encoding pass and write one run each.")
    g.add_argument("--hits", type=int, default=1000, help="hits per query in the run (default 1000)")
    g.add_argument("--batch-size", type=int, default=64, help="queries encoded and searched per batch")
    g.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                   help="search threads for FAISS and Lucene")
    g.add_argument("--encoder", default=None,
                   help="query encoder checkpoint (default: the encoder recorded in the index's dupmae_index.json)")
    g.add_argument("--device", default="cpu", help="query encoder device")
    g.add_argument("--encoded-queries", default=None,
                   help="folder from `dupmae_ir.encode --queries` (read from dense/embedding.npy, dense/queries.jsonl "
                        "and impact.jsonl; the pickle beside them is never loaded): use these query representations "
                        "instead of encoding (as Pyserini's --encoded-queries)")
    g.add_argument("--min-idf", type=float, default=-1,
                   help="impact side: drop query tokens with idf <= this (default -1 keeps all: exact dot product; "
                        "Pyserini's default 0 drops tokens present in every document)")
    f = parser.add_argument_group("fusion (hybrid mode)")
    f.add_argument("--fusion", choices=FUSIONS, default="sum",
                   help="sum: alpha*sparse + dense (DupMAE's score with the default alpha); normalized: Pyserini's "
                        "--normalization then alpha*sparse + dense; rrf: reciprocal-rank fusion")
    f.add_argument("--alpha", type=float, default=None,
                   help="sparse weight (default: 1/(s_q*s_d) from the index for sum, 1.0 for normalized)")
    f.add_argument("--weight-on-dense", action="store_true", help="score = sparse + alpha*dense instead")
    f.add_argument("--depth", type=int, default=None,
                   help="hits taken from each side before fusion (Pyserini's fusion --hits; default --hits)")
    f.add_argument("--rrf-k", type=int, default=60, help="RRF constant k (default 60)")


def fusion_from_args(args) -> FusionConfig:
    return FusionConfig(args.fusion, args.alpha, args.weight_on_dense, args.rrf_k)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dupmae_ir.search",
        description="Dense, impact and hybrid (DupMAE) search over a `dupmae_ir.encode` index with FAISS and "
                    "Pyserini's LuceneImpactSearcher. Writes TREC runs with provenance JSON beside them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--index", required=True, help="folder written by `python -m dupmae_ir.encode --output`")
    io.add_argument("--topics", required=True,
                    help="queries: a TSV (qid<TAB>text) or JSONL file, a BEIR folder, or a collection name "
                         "(`default`, `beir/scifact`, ...)")
    io.add_argument("--split", default=None, help="query split of a collection (default: its evaluation split)")
    io.add_argument("--data-dir", default=None, help="folder of local BEIR collections for --topics names")
    io.add_argument("--output", default=None,
                    help="run file; with several --mode, '{mode}' in it is replaced (default: "
                         "runs/<index>.<topics>.{mode}.trec)")
    io.add_argument("--overwrite", action="store_true", help="replace run files of an earlier search")
    io.add_argument("--drop-query-id", action="store_true",
                    help="remove hits whose docid equals the query id (BEIR convention for ArguAna and Quora)")
    add_search_args(p)
    add_debug_flag(p)
    return p


def _output_path(args, mode: str) -> Path:
    """``--output`` with ``{mode}`` filled in (or ``.<mode>`` added when several modes share it);
    default ``runs/<index>.<topics>.<mode>.trec``."""
    if not args.output:
        name = Path(args.topics).name.replace(".jsonl", "").replace(".tsv", "") or "topics"
        return Path("runs") / f"{Path(args.index).name}.{name}.{mode}.trec"
    if "{mode}" in args.output:
        return Path(args.output.replace("{mode}", mode))
    out = Path(args.output)
    return out if len(args.mode) == 1 else out.with_name(f"{out.stem}.{mode}{out.suffix}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import resolve
    from .outputs import check_output_file
    from .runs import is_run_file

    collection = resolve(args.topics, data_dir=args.data_dir)
    queries = collection.queries(args.split)
    outputs = {mode: _output_path(args, mode) for mode in args.mode}
    for out in outputs.values():  # before any model or index is loaded
        check_output_file(out, is_run_file, args.overwrite, what="run file")
    t0 = time.perf_counter()
    searcher = DupMAESearcher(args.index, encoder=args.encoder, threads=args.threads, device=args.device,
                              min_idf=args.min_idf, encoded_queries=args.encoded_queries)
    fusion = fusion_from_args(args)
    t1 = time.perf_counter()
    runs = searcher.search_all(queries, args.mode, args.hits, args.depth, fusion, args.batch_size,
                               drop_query_id=args.drop_query_id)
    t2 = time.perf_counter()
    for mode, run in runs.items():
        out = outputs[mode]
        alpha = fusion.alpha_for(searcher.alpha)
        write_trec(out, run, tag=f"dupmae-{mode}", overwrite=args.overwrite, provenance_info=dict(
            mode=mode, index=str(Path(args.index).resolve()), encoder=searcher.encoder_name,
            topics=str(args.topics), split=args.split, hits=args.hits, depth=args.depth or args.hits,
            fusion=dict(fusion=fusion.fusion, alpha=alpha, weight_on_dense=fusion.weight_on_dense,
                        rrf_k=fusion.rrf_k) if mode == "hybrid" else None,
            min_idf=args.min_idf, drop_query_id=args.drop_query_id, encoded_queries=args.encoded_queries,
            index_meta=searcher.info.meta))
        print(f"{mode}: {len(run)} queries -> {out}", file=sys.stderr)
    print(f"searched {len(queries)} queries in {t2 - t1:.1f} s ({len(queries) / max(t2 - t1, 1e-9):.1f} q/s; "
          f"set-up {t1 - t0:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
