"""Dense, impact and hybrid retrieval over the indexes of :mod:`dupmae_ir.encode`, with Pyserini.

An index folder written by ``python -m dupmae_ir.encode`` holds ``dense/`` (FAISS, read by Pyserini's
``FaissSearcher``), ``impact/`` (Lucene impact index, read by ``LuceneImpactSearcher``) and
``dupmae_index.json`` (provenance: encoder, quantisation scales ``s_q``/``s_d``, top-k, activation).

DupMAE's relevance score (paper section 3.4) is an unweighted sum of two inner products::

    <q, d> = h_q . h_d + sum_{i in topk(d)} mu_q[i] * mu_d[i]

The impact index stores ``round(mu * s)``, so Lucene's integer score is ``~ s_q * s_d * (mu_q . mu_d)``
and ``score = dense + alpha * sparse`` with ``alpha = 1 / (s_q * s_d)`` and no normalisation gives
DupMAE's score back: that is the default fusion (``sum``). :func:`fuse` follows Pyserini's
``HybridSearcher`` exactly (union of both top-``depth`` lists; a document missing from one side gets
that side's minimum score), so its runs equal ``python -m pyserini.search.hybrid`` with
``fusion --alpha <1/(s_q*s_d)>``; it adds deterministic tie-breaking (score descending, then docid
ascending) where Pyserini's order of tied hits depends on ``PYTHONHASHSEED``.

Fusions: ``sum`` (``alpha * sparse + dense``; alpha defaults to ``1/(s_q*s_d)``), ``normalized``
(Pyserini's ``--normalization``: each side's scores centred on its (min+max)/2 and divided by its range,
then ``alpha * sparse + dense``; alpha defaults to 1), ``rrf`` (reciprocal-rank fusion,
``sum 1/(rrf_k + rank)``).

Library::

    from dupmae_ir.search import DupMAESearcher
    searcher = DupMAESearcher("indexes/default/scifact")
    runs = searcher.search_all(queries, modes=("dense", "impact", "hybrid"), hits=1000)
    # runs["hybrid"][qid] = [(docid, score), ...] best first

CLI: ``python -m dupmae_ir.search --index DIR --topics FILE_OR_NAME [--mode hybrid] --output runs/x.trec``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

MODES = ("dense", "impact", "hybrid")
FUSIONS = ("sum", "normalized", "rrf")
INDEX_META = "dupmae_index.json"
# BEIR's evaluation drops a hit whose docid equals the query id on these sets (the query is itself a
# document of the corpus); see BEIR's EvaluateRetrieval.evaluate(ignore_identical_ids=True).
DROP_QUERY_ID_DATASETS = ("arguana", "quora")

Hit = tuple[str, float]  # (docid, score)
Run = dict[str, list[Hit]]  # qid -> hits, best first


# ------------------------------------------------------------------------------------------------
# fusion: the one home of dense + sparse score combination
# ------------------------------------------------------------------------------------------------
def rank_hits(scores: dict[str, float], k: int | None = None) -> list[Hit]:
    """``{docid: score}`` -> hits sorted by score descending, ties broken by docid ascending."""
    hits = sorted(scores.items(), key=lambda h: (-h[1], h[0]))
    return hits if k is None else hits[:k]


@dataclass(frozen=True)
class FusionConfig:
    """How dense and sparse lists combine. ``alpha=None`` means: the fusion's default (``sum``:
    ``1/(s_q*s_d)`` from the index, ``normalized``: 1.0)."""

    fusion: str = "sum"
    alpha: float | None = None
    weight_on_dense: bool = False  # Pyserini's --weight-on-dense: sparse + alpha * dense
    rrf_k: int = 60

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion={self.fusion!r}; valid: {FUSIONS}")
        if self.rrf_k < 0:
            raise ValueError(f"rrf_k={self.rrf_k} must be >= 0")

    def alpha_for(self, index_alpha: float) -> float:
        """The sparse weight in use: explicit ``alpha``, else ``1/(s_q*s_d)`` for ``sum``, else 1."""
        if self.alpha is not None:
            return self.alpha
        return index_alpha if self.fusion == "sum" else 1.0


def fuse(dense: Sequence[Hit], sparse: Sequence[Hit], k: int, fusion: str = "sum", alpha: float = 1.0,
         weight_on_dense: bool = False, rrf_k: int = 60) -> list[Hit]:
    """Fuse a dense and a sparse hit list of one query into the top ``k``.

    ``sum``/``normalized`` reproduce Pyserini's ``HybridSearcher._hybrid_results`` (union of the two
    lists, a missing side filled with that side's minimum score; ``normalized`` maps each side with
    ``(s - (min+max)/2) / (max-min)``); ``score = alpha * sparse + dense`` (``sparse + alpha * dense``
    with ``weight_on_dense``). ``rrf``: ``sum over lists of 1 / (rrf_k + rank)``, rank from 1.
    """
    if fusion == "rrf":
        scores: dict[str, float] = {}
        for hits in (dense, sparse):
            for rank, (docid, _) in enumerate(hits, start=1):
                scores[docid] = scores.get(docid, 0.0) + 1.0 / (rrf_k + rank)
        return rank_hits(scores, k)
    if fusion not in ("sum", "normalized"):
        raise ValueError(f"fusion={fusion!r}; valid: {FUSIONS}")
    d = dict(dense)
    s = dict(sparse)
    d_min, d_max = (min(d.values()), max(d.values())) if d else (0.0, 1.0)
    s_min, s_max = (min(s.values()), max(s.values())) if s else (0.0, 1.0)
    scores = {}
    for docid in d.keys() | s.keys():
        ds = d.get(docid, d_min)
        ss = s.get(docid, s_min)
        if fusion == "normalized":
            # Pyserini divides by (max - min) unguarded; a one-hit side would divide by zero there.
            ss = (ss - (s_min + s_max) / 2) / ((s_max - s_min) or 1.0)
            ds = (ds - (d_min + d_max) / 2) / ((d_max - d_min) or 1.0)
        scores[docid] = ss + alpha * ds if weight_on_dense else alpha * ss + ds
    return rank_hits(scores, k)


# ------------------------------------------------------------------------------------------------
# index metadata
# ------------------------------------------------------------------------------------------------
RETRIEVER_FIELDS = ("doc_scale", "query_scale", "doc_topk", "query_topk", "activation")


@dataclass(frozen=True)
class IndexInfo:
    """The two sub-indexes of an encode output folder and what made them."""

    root: Path
    dense: Path
    impact: Path
    encoder: str
    retriever: dict  # the RetrieverConfig fields in RETRIEVER_FIELDS
    meta: dict = field(default_factory=dict, repr=False)

    @property
    def alpha(self) -> float:
        """``1 / (s_q * s_d)``: the sparse weight that turns integer impact scores back into
        ``mu_q . mu_d`` (DUPMAE.md section 3)."""
        return 1.0 / (float(self.retriever["query_scale"]) * float(self.retriever["doc_scale"]))


def _find_fields(meta: dict) -> dict:
    """The RetrieverConfig fields from ``dupmae_index.json`` (top level or one nested dict)."""
    candidates = [meta] + [v for v in meta.values() if isinstance(v, dict)]
    for c in candidates:
        if all(f in c for f in ("doc_scale", "query_scale")):
            return {f: c[f] for f in RETRIEVER_FIELDS if f in c}
    return {}


def load_index(index_dir: str | os.PathLike) -> IndexInfo:
    """Read an encode output folder; raise a clear error naming what is missing."""
    root = Path(index_dir)
    meta_path = root / INDEX_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not a dupmae_ir index folder (no {INDEX_META}). "
                                f"Fix: build it with `python -m dupmae_ir.encode --corpus ... --output {root}`.")
    meta = json.loads(meta_path.read_text())
    dense, impact = root / "dense", root / "impact"
    for p, what in ((dense / "index", "FAISS index"), (dense / "docid", "FAISS docid list"), (impact, "impact index")):
        if not p.exists():
            raise FileNotFoundError(f"{p}: {what} missing from {root}. Fix: re-run `python -m dupmae_ir.encode`.")
    retriever = _find_fields(meta)
    if not retriever:
        raise ValueError(f"{meta_path}: no 'doc_scale'/'query_scale' fields; cannot de-quantise impact scores.")
    encoder = meta.get("encoder") or meta.get("model_name_or_path") or meta.get("encoder_path") or "default"
    if isinstance(encoder, dict):
        encoder = encoder.get("path") or encoder.get("model_name_or_path") or "default"
    return IndexInfo(root, dense, impact, str(encoder), retriever, meta)


# ------------------------------------------------------------------------------------------------
# searcher
# ------------------------------------------------------------------------------------------------
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


@dataclass
class EncodedQueries:
    """Pre-encoded queries keyed by query text (as Pyserini looks them up): ``dense[text]`` (d,),
    ``impacts[text]`` ``{token: int}``. Read with :func:`load_encoded_queries`."""

    dense: dict
    impacts: dict
    folder: Path

    def batch(self, texts: Sequence[str]):
        """The representations of ``texts``, in the shape of :class:`dupmae_ir.encoder.EncodedBatch`."""
        import numpy as np

        from .encoder import EncodedBatch

        missing = [t for t in texts if t.strip() not in self.dense or t.strip() not in self.impacts]
        if missing:
            raise KeyError(f"{self.folder}: {len(missing)} query text(s) not pre-encoded, e.g. {missing[0]!r}. "
                           "Fix: encode these topics with `dupmae_ir.encode.encode_queries` (or drop --encoded-queries).")
        dense = np.stack([self.dense[t.strip()] for t in texts]).astype(np.float32)  # (B, d)
        return EncodedBatch(dense, [self.impacts[t.strip()] for t in texts])


def load_encoded_queries(folder: str | os.PathLike) -> EncodedQueries:
    """Read the output of :func:`dupmae_ir.encode.encode_queries`: ``dense/embedding.pkl`` (pandas,
    ``text``/``embedding``, what Pyserini's ``--encoded-queries`` reads) and ``impact.jsonl``
    (``contents``/``vector``, what Pyserini's impact ``--encoder *.jsonl`` reads)."""
    import numpy as np
    import pandas as pd

    folder = Path(folder)
    pkl, jsonl = folder / "dense" / "embedding.pkl", folder / "impact.jsonl"
    for p in (pkl, jsonl):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; --encoded-queries expects the folder written by "
                                    "`dupmae_ir.encode.encode_queries` (dense/embedding.pkl, impact.jsonl).")
    frame = pd.read_pickle(pkl)
    dense = {str(t).strip(): np.asarray(e, dtype=np.float32) for t, e in zip(frame["text"], frame["embedding"])}
    impacts = {}
    with open(jsonl, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                obj = json.loads(line)
                impacts[obj["contents"].strip()] = {k: int(v) for k, v in obj["vector"].items()}
    return EncodedQueries(dense, impacts, folder)


class _LookupImpactEncoder:
    """Pyserini impact query encoder answering from impacts computed in a batch (``{text: {tok: int}}``)."""

    def __init__(self):
        self.table: dict[str, dict[str, int]] = {}

    def encode(self, text: str, **kwargs) -> dict[str, int]:
        return self.table[text]


def _faiss_batch_search(searcher, vectors, qids, k, threads):
    """``FaissSearcher.batch_search`` that leaves torch's thread count as it found it.

    Pyserini calls ``faiss.omp_set_num_threads(threads)``; FAISS and torch share one OpenMP runtime,
    so without the restore every later torch op (query/document encoding) runs on ``threads`` cores.
    """
    import torch

    torch_threads = torch.get_num_threads()
    try:
        return searcher.batch_search(vectors, qids, k=k, threads=threads)
    finally:
        torch.set_num_threads(torch_threads)


class DupMAESearcher:
    """Dense, impact and hybrid search over one encode output folder, with Pyserini's searchers.

    Queries are encoded once per batch by :class:`dupmae_ir.encoder.DupMAEEncoder` (dense vector and
    integer impacts in one forward pass) with the scales, top-k and activation stored in the index;
    FAISS and Lucene then search the batch with ``threads`` threads. Java hits become Python tuples
    at once (millions of live Java objects exhaust the JVM heap).
    """

    def __init__(self, index_dir: str | os.PathLike, encoder: str | None = None, threads: int = 1,
                 device: str = "cpu", dtype: str = "fp32", min_idf: float = -1,
                 encoded_queries: str | os.PathLike | None = None):
        from .java import start_jvm

        start_jvm()
        from pyserini.search.faiss import FaissSearcher
        from pyserini.search.lucene import LuceneImpactSearcher

        from .encoder import DupMAEEncoder
        from .modeling.backbone import resolve_model_path
        from .modeling.retriever import RetrieverConfig

        self.info = load_index(index_dir)
        self.encoder_name = encoder or self.info.encoder
        path = resolve_model_path(self.encoder_name)
        config = RetrieverConfig.load(path) if Path(path).is_dir() else RetrieverConfig()
        config = replace(config, **self.info.retriever)  # the index's scales/top-k/activation win
        self.encoder = DupMAEEncoder(self.encoder_name, device=device, dtype=dtype, config=config)
        self.threads = threads
        self.min_idf = min_idf
        # pre-encoded queries (encode_queries' folder) replace live encoding: the same inputs as stock
        # Pyserini's --encoded-queries / impact --encoder *.jsonl, so runs match bit for bit
        self.encoded = load_encoded_queries(encoded_queries) if encoded_queries else None
        self._impact_queries = _LookupImpactEncoder()
        self.dense_searcher = FaissSearcher(str(self.info.dense), query_encoder=None)
        # min_idf=-1 keeps every query token the index holds: the exact dot product. Pyserini's
        # default 0 drops tokens present in every document (idf 0), which changes DupMAE's score.
        self.impact_searcher = LuceneImpactSearcher(str(self.info.impact), self._impact_queries, min_idf=min_idf)
        raise_max_clause_count()


    @property
    def alpha(self) -> float:
        return self.info.alpha

    def search_batch(self, qids: Sequence[str], texts: Sequence[str], modes: Iterable[str] = MODES,
                     hits: int = 1000, depth: int | None = None, fusion: FusionConfig = FusionConfig(),
                     drop_query_id: bool = False) -> dict[str, Run]:
        """Search one batch; returns ``{mode: {qid: [(docid, score), ...]}}``.

        ``depth`` (default ``hits``) is how many hits each side contributes to hybrid fusion
        (Pyserini's ``fusion --hits``). ``drop_query_id`` removes a hit whose docid equals its qid
        (BEIR's convention on ArguAna and Quora) before cutting to ``hits``.
        """
        modes = tuple(modes)
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f"modes {bad}; valid: {MODES}")
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
            res = _faiss_batch_search(self.dense_searcher, enc.dense, qids, k_dense, self.threads)
            dense_run = {q: [(h.docid, float(h.score)) for h in res[q]] for q in qids}
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
# run files
# ------------------------------------------------------------------------------------------------
def write_trec(path: str | os.PathLike, run: Run, tag: str, provenance_info: dict | None = None) -> Path:
    """Write a TREC run (``qid Q0 docid rank score tag``, 6 decimals as Pyserini) atomically, and
    ``<path>.json`` provenance beside it."""
    from .provenance import atomic_write_text, provenance, write_json

    path = Path(path)
    lines = []
    for qid, hits in run.items():
        for rank, (docid, score) in enumerate(hits, start=1):
            lines.append(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    atomic_write_text(path, "".join(lines))
    write_json(path.with_name(path.name + ".json"),
               provenance(artifact="trec_run", run=str(path), tag=tag, queries=len(run), **(provenance_info or {})))
    return path


def read_trec(path: str | os.PathLike) -> Run:
    """Read a TREC run into ``{qid: [(docid, score), ...]}`` in file order."""
    run: Run = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', found {len(parts)} fields.")
            run.setdefault(parts[0], []).append((parts[2], float(parts[4])))
    return run


def to_ir_measures(run: Run) -> dict[str, dict[str, float]]:
    """``{qid: [(docid, score)]}`` -> ir-measures' ``{qid: {docid: score}}`` (a new dict)."""
    return {q: {d: s for d, s in hits} for q, hits in run.items()}


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
                   help="folder from `dupmae_ir.encode.encode_queries` (dense/embedding.pkl, impact.jsonl): use these "
                        "query representations instead of encoding (as Pyserini's --encoded-queries)")
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
        description="Dense, impact and hybrid (DupMAE) search over a `dupmae_ir.encode` index with Pyserini's "
                    "FaissSearcher and LuceneImpactSearcher. Writes TREC runs with provenance JSON beside them.",
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
    io.add_argument("--drop-query-id", action="store_true",
                    help="remove hits whose docid equals the query id (BEIR convention for ArguAna and Quora)")
    add_search_args(p)
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

    collection = resolve(args.topics, data_dir=args.data_dir)
    queries = collection.queries(args.split)
    t0 = time.perf_counter()
    searcher = DupMAESearcher(args.index, encoder=args.encoder, threads=args.threads, device=args.device,
                              min_idf=args.min_idf, encoded_queries=args.encoded_queries)
    fusion = fusion_from_args(args)
    t1 = time.perf_counter()
    runs = searcher.search_all(queries, args.mode, args.hits, args.depth, fusion, args.batch_size,
                               drop_query_id=args.drop_query_id)
    t2 = time.perf_counter()
    for mode, run in runs.items():
        out = _output_path(args, mode)
        alpha = fusion.alpha_for(searcher.alpha)
        write_trec(out, run, tag=f"dupmae-{mode}", provenance_info=dict(
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
    sys.exit(main())
