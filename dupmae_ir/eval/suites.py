"""The evaluation suites: which collections and splits, and the run of one collection."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.resolve import DROP_QUERY_ID_DATASETS
from ..dense_index import DenseIndexSpec
from ..runs import HYBRID_BM25, MODES, FusionConfig, score_run, write_trec
from .baselines import BACKBONE, BM25_BACKBONE
from .significance import paired_against

BEIR_MEASURES = ("nDCG@10", "R@100", "R@1000")
MSMARCO_SPLITS = ("dev-small", "dl19", "dl20")
MSMARCO_MEASURES = {"dev-small": ("RR@10", "R@1000"), "dl19": ("nDCG@10",), "dl20": ("nDCG@10",)}

# Published nDCG@10 (DupMAE paper): BM25 / RetroMAE / DupMAE, zero-shot after MS MARCO fine-tuning.
PAPER_BEIR = {
    "trec-covid": (0.656, 0.772, 0.728), "bioasq": (0.465, 0.421, 0.508), "nfcorpus": (0.325, 0.308, 0.346),
    "nq": (0.329, 0.518, 0.570), "hotpotqa": (0.603, 0.635, 0.681), "fiqa": (0.236, 0.316, 0.345),
    "signal1m": (0.330, 0.265, 0.213), "trec-news": (0.398, 0.428, 0.427), "robust04": (0.408, 0.447, 0.479),
    "arguana": (0.315, 0.433, 0.474), "webis-touche2020": (0.367, 0.237, 0.343),
    "cqadupstack": (0.299, 0.317, 0.320), "quora": (0.789, 0.847, 0.845), "dbpedia-entity": (0.313, 0.390, 0.418),
    "scidocs": (0.158, 0.150, 0.153), "fever": (0.753, 0.774, 0.800), "climate-fever": (0.213, 0.232, 0.232),
    "scifact": (0.665, 0.653, 0.699),
}
PAPER_BEIR_AVERAGE = (0.423, 0.452, 0.477)
# MS MARCO passage: DupMAE stage 3 (paper) and Pyserini's published BM25 (k1=0.9, b=0.4).
PAPER_MSMARCO = {"dev-small": {"RR@10": 0.426, "R@1000": 0.989}, "dl19": {"nDCG@10": 0.751}, "dl20": {}}
PYSERINI_BM25_MSMARCO = {"dev-small": {"RR@10": 0.184, "R@1000": 0.853}, "dl19": {"nDCG@10": 0.506},
                         "dl20": {"nDCG@10": 0.480}}
SYSTEMS = ("bm25", BACKBONE, BM25_BACKBONE, *MODES, HYBRID_BM25)  # the report's order


@dataclass(frozen=True)
class Unit:
    """One scored thing: a collection (or a cqadupstack forum) and a query split."""

    name: str  # e.g. "scifact", "cqadupstack/android", "msmarco-passage"
    source: str  # name for dupmae_ir.data.resolve
    split: str
    measures: tuple[str, ...]
    key: str  # result file stem / report row, e.g. "scifact", "cqadupstack/android", "dl19"


def beir_units(datasets: list[str], measures: tuple[str, ...] | None, data_dir: str | None = None) -> list[Unit]:
    """The units of BEIR collections; with ``data_dir``, any folder ``<data_dir>/<name>`` in BEIR layout too."""
    from ..data.resolve import BEIR_DATASETS, CQADUPSTACK_FORUMS

    units = []
    for name in datasets:
        local = data_dir is not None and (Path(data_dir) / name).is_dir()
        if name not in BEIR_DATASETS and not name.startswith("cqadupstack/") and not local:
            from ..errors import UserError

            raise UserError("--datasets", f"unknown BEIR collection {name!r}",
                            f"pass some of {', '.join(BEIR_DATASETS)} (or cqadupstack/<forum>), or a folder "
                            "under --data-dir")
        split = "v2" if name == "webis-touche2020" else "test"
        names = [f"cqadupstack/{f}" for f in CQADUPSTACK_FORUMS] if name == "cqadupstack" else [name]
        for n in names:
            units.append(Unit(n, f"beir/{n}", split, measures or BEIR_MEASURES, n))
    return units


def msmarco_units(measures: tuple[str, ...] | None) -> list[Unit]:
    return [Unit("msmarco-passage", "msmarco-passage", s, measures or MSMARCO_MEASURES[s], s) for s in MSMARCO_SPLITS]


def resolve_unit(unit: Unit, data_dir: str | None):
    """The Collection of a unit, or a string saying why it is missing."""
    from ..data import DataError, resolve

    if data_dir is not None:
        short = unit.source[len("beir/"):] if unit.source.startswith("beir/") else unit.source
        folder = Path(data_dir) / short
        if not folder.is_dir():
            return f"no folder {folder}"
        try:
            coll = resolve(folder)
        except DataError as e:
            return str(e)
        if not coll.has_corpus():
            return f"no corpus (corpus.jsonl[.gz]) in {folder}"
        return coll
    try:
        coll = resolve(unit.source)
    except DataError as e:
        return str(e)
    if not coll.has_corpus():
        return f"{unit.source}: ir_datasets does not distribute its documents; use --data-dir"
    return coll


def _split_for(coll, unit: Unit) -> str:
    """Local BEIR folders name the touche v2 split 'test'."""
    if coll.kind == "beir" and unit.split not in coll.splits() and "test" in coll.splits():
        return "test"
    return unit.split


# Lengths at evaluation: BEIR practice encodes documents with 512 pieces; ArguAna's queries are whole
# arguments (~200 words), which a 32-piece training length would cut to their first sentence.
BEIR_DOC_MAX_LENGTH = 512
LONG_QUERY_MAX_LENGTH = {"arguana": 512}


@dataclass
class EvalSettings:
    """What one ``dupmae_ir.eval`` run does: the model, where artifacts go, how it searches."""

    encoder: str = "default"
    output: str = "eval"  # reports: <output>/<suite>/<encoder>/
    index_root: str = "indexes"  # indexes: <index_root>/<encoder>-<fingerprint>/<collection>
    runs: str = "runs"  # runs: <runs>/<suite>/<encoder|bm25>/
    data_dir: str | None = None
    modes: tuple[str, ...] = MODES  # DupMAE systems (and hybrid+bm25); empty: BM25 only (nothing is encoded)
    bm25: bool = True
    baseline_backbone: str | None = None  # a checkpoint: its zero-shot run and BM25 + it (.baselines)
    force_search: bool = False
    hits: int = 1000
    batch_size: int = 64
    threads: int = 2
    depth: int | None = None
    min_idf: float = -1
    ef_search: int | None = None  # FAISS knobs of HNSW / IVF indexes (dupmae_ir.dense_index defaults)
    nprobe: int | None = None
    dense_index: DenseIndexSpec = field(default_factory=DenseIndexSpec)  # the FAISS type encode builds (--faiss)
    doc_max_length: int | None = None  # None: BEIR_DOC_MAX_LENGTH on BEIR, the checkpoint's on MS MARCO
    query_max_length: int | None = None  # None: LONG_QUERY_MAX_LENGTH, else the checkpoint's
    fusion: FusionConfig = field(default_factory=FusionConfig)


def encoder_tag(encoder: str, fingerprint: dict | None = None) -> str:
    """The folder name of an encoder's indexes, runs and reports: its folder's name and, when given, its
    fingerprint (two checkpoints called ``final`` get two folders)."""
    from ..fingerprint import fingerprint_id

    name = "default" if encoder == "default" else Path(encoder.rstrip("/")).name
    return f"{name}-{fingerprint_id(fingerprint)[:8]}" if fingerprint is not None else name


class Evaluator:
    """Runs one suite; every finished unit is a file under ``results/``. Indexes, runs and results are
    keyed by the checkpoint's fingerprint (:mod:`dupmae_ir.fingerprint`), and an index or a result file
    is reused only when the checkpoint, the corpus and the settings it records are the current ones."""

    def __init__(self, suite: str, settings: EvalSettings):
        self.suite = suite
        self.args = settings
        self.encoder_fp = None  # BM25 alone: no checkpoint is read
        if settings.modes:
            from ..fingerprint import checkpoint_fingerprint
            from ..modeling.backbone import resolve_model_path

            self.encoder_fp = checkpoint_fingerprint(resolve_model_path(settings.encoder))
        self.tag = encoder_tag(settings.encoder, self.encoder_fp)
        self.dense_search = None
        if settings.modes:  # checked before anything is encoded; a non-flat type gets folders of its own
            self.dense_search = settings.dense_index.search_knobs(settings.ef_search, settings.nprobe)
            self.tag += "" if settings.dense_index.kind == "flat" else f"-{settings.dense_index.label()}"
        self.out = Path(settings.output) / suite / self.tag
        self.index_root = Path(settings.index_root)
        self.runs_root = Path(settings.runs) / suite
        self.fusion = settings.fusion
        self._corpus_fps: dict = {}
        self.backbone = None
        if settings.baseline_backbone:
            from .baselines import BackboneBaseline

            self.backbone = BackboneBaseline.load(settings.baseline_backbone)

    def corpus_fingerprint(self, coll) -> dict:
        """The corpus fingerprint of a collection, hashed once per run (MS MARCO's splits share one)."""
        from ..fingerprint import corpus_fingerprint

        key = (coll.kind, str(coll.path), coll.ir_id)
        if key not in self._corpus_fps:
            self._corpus_fps[key] = corpus_fingerprint(coll)
        return self._corpus_fps[key]

    def depends_on(self, unit: Unit, coll) -> dict:
        """What a unit's result depends on: checkpoint and corpus fingerprints, and the settings that
        change its numbers (a result file recording anything else is computed again)."""
        doc_len, query_len = self.lengths(unit)
        corpus, split = self.corpus_fingerprint(coll), _split_for(coll, unit)
        spec = self.args.dense_index
        depends = {"inputs": {"encoder": self.encoder_fp, "corpus": corpus}, "modes": list(self.args.modes),
                   "bm25": self.args.bm25, "hits": self.args.hits, "depth": self.args.depth,
                   "min_idf": self.args.min_idf, "fusion": asdict(self.fusion), "lengths": [doc_len, query_len],
                   "split": split, "dense_index": {"faiss": spec.kind, "params": spec.build_params()},
                   "dense_search": self.dense_search}
        if self.backbone is not None:  # only then: results of runs without it stay reusable
            depends["baseline_backbone"] = self.backbone.depends_on(
                corpus, (doc_len, query_len), split, self.args.hits, unit.name in DROP_QUERY_ID_DATASETS)
        return depends

    def lengths(self, unit: Unit) -> tuple[int | None, int | None]:
        """(document, query) pieces for a unit: the settings', else the suite's defaults (None: the checkpoint's)."""
        doc = self.args.doc_max_length or (BEIR_DOC_MAX_LENGTH if self.suite == "beir" else None)
        return doc, self.args.query_max_length or LONG_QUERY_MAX_LENGTH.get(unit.name.split("/")[0])

    def _check_index(self, index: Path, coll, doc_len: int | None) -> None:
        """An index built earlier is reused only when it was encoded from this checkpoint and this corpus
        (their fingerprints) and at the requested document length."""
        from ..errors import UserError
        from ..fingerprint import changes
        from ..index import index_encoder_fingerprint, load_index

        info = load_index(index, check=False)
        meta = info.meta
        recorded = meta.get("inputs")
        current = {"encoder": self.encoder_fp, "corpus": self.corpus_fingerprint(coll)}
        if not isinstance(recorded, dict):  # written before fingerprints: its checkpoint is fingerprinted now
            recorded, current = {"encoder": index_encoder_fingerprint(info)}, {"encoder": self.encoder_fp}
        differ = changes({"inputs": recorded}, {"inputs": current})
        if recorded.get("encoder") is not None and differ:
            raise UserError(index, "was built from other inputs than this eval's: " + "; ".join(differ),
                            "pass another --index-root, or remove this index folder to build it again")
        dense = meta.get("dense")
        differ = self.args.dense_index.differs_from(dense) if isinstance(dense, dict) else []
        if differ:
            raise UserError(index, "holds a FAISS index of " + "; ".join(differ),
                            "pass the --faiss flags it was built with, or remove this index folder to build it again")
        built = meta.get("retriever", {}).get("doc_max_length")
        if doc_len is not None and built is not None and built != doc_len:  # no recorded length: taken as is
            raise UserError(index, f"was encoded with documents of {built} pieces, {doc_len} asked",
                            "pass --doc-max-length " + str(built) + " or another --index-root")

    def result_path(self, unit: Unit) -> Path:
        return self.out / "results" / f"{unit.key.replace('/', '__')}.json"

    def run_unit(self, unit: Unit, queries_cache: dict) -> dict:
        from ..provenance import provenance, write_json

        path = self.result_path(unit)
        coll = resolve_unit(unit, self.args.data_dir)
        if isinstance(coll, str):
            # missing collections get no result file: they are checked again on every run
            return {"unit": unit.key, "collection": unit.name, "status": "missing", "reason": coll}
        depends_on = self.depends_on(unit, coll)
        if path.is_file() and not self.args.force_search:
            done = self._reusable(path, unit, depends_on)
            if done is not None:
                return done
        timings = {}
        t = time.perf_counter()
        index = self.index_root / self.tag / unit.name
        doc_len, query_len = self.lengths(unit)
        from ..encode.distributed import is_worker, world

        if self.args.modes and not (index / "dupmae_index.json").is_file():  # BM25 alone encodes nothing
            if world():  # under torchrun every process encodes a share; rank 0 alone searches and scores
                from ..encode.distributed import encode_corpus_distributed

                encode_corpus_distributed(coll, index, encoder=self.args.encoder, doc_max_length=doc_len,
                                          faiss=self.args.dense_index)
            else:
                from ..encode import encode_corpus

                encode_corpus(coll, index, encoder=self.args.encoder, doc_max_length=doc_len, device="auto",
                              faiss=self.args.dense_index)
        elif self.args.modes:
            self._check_index(index, coll, doc_len)
        if is_worker():
            return {"unit": unit.key, "collection": unit.name, "status": "worker"}
        timings["encode"] = time.perf_counter() - t
        split = _split_for(coll, unit)
        queries, qrels = coll.queries(split), coll.qrels(split)
        drop = unit.name in DROP_QUERY_ID_DATASETS
        runs, dense_search, dense_index, bm25_index = {}, None, None, None
        if self.args.bm25 or HYBRID_BM25 in self.args.modes:  # hybrid+bm25 fuses a BM25 run of its own
            from ..bm25 import build_bm25_index
            t = time.perf_counter()
            bm25_index = build_bm25_index(coll, self.index_root / "bm25" / unit.name, threads=self.args.threads)
            timings["bm25_index"] = time.perf_counter() - t
        t = time.perf_counter()
        if self.args.modes:
            cache_key = (unit.name, "searcher")
            from ..search import DupMAESearcher

            # the index's own query encoder; hybrid+bm25 is the run `dupmae_ir.search --mode hybrid+bm25` writes
            searcher = queries_cache.get(cache_key) or DupMAESearcher(
                index, threads=self.args.threads, min_idf=self.args.min_idf, query_max_length=query_len,
                ef_search=self.args.ef_search, nprobe=self.args.nprobe,
                bm25_index=bm25_index if HYBRID_BM25 in self.args.modes else None)
            queries_cache.clear()
            queries_cache[cache_key] = searcher  # msmarco: one searcher for its three splits
            dense_search = searcher.dense_search
            dense_index = searcher.info.meta.get("dense")  # type and build parameters, as the index records them
            runs.update(searcher.search_all(queries, self.args.modes, self.args.hits, self.args.depth,
                                            self.fusion, self.args.batch_size, drop_query_id=drop))
        timings["search"] = time.perf_counter() - t
        if self.args.bm25:
            from ..bm25 import bm25_search

            t = time.perf_counter()
            runs["bm25"] = bm25_search(bm25_index, queries, self.args.hits, threads=self.args.threads,
                                       drop_query_id=drop)
            timings["bm25_search"] = time.perf_counter() - t
        run_files = {}
        if self.backbone is not None:
            from .baselines import fuse_with_bm25

            t = time.perf_counter()
            folder = self.runs_root / encoder_tag(self.backbone.checkpoint, self.backbone.fingerprint)
            runs[BACKBONE] = self.backbone.run(coll, queries, folder / f"{unit.key}.{BACKBONE}.trec",
                                               depends_on["baseline_backbone"])
            runs[BM25_BACKBONE] = fuse_with_bm25(runs["bm25"], runs[BACKBONE], self.args.hits)
            run_files[BACKBONE] = str(folder / f"{unit.key}.{BACKBONE}.trec")
            timings["backbone"] = time.perf_counter() - t
        scores, coverage = {}, None
        for system, run in runs.items():
            if system not in run_files:
                run_files[system] = str(self._write_run(unit, system, run, dict(
                    collection=unit.name, split=split, system=system, drop_query_id=drop, hits=self.args.hits,
                    index=str(self.index_root / "bm25" / unit.name) if system == "bm25" else str(index),
                    dense_search=dense_search if system in ("dense", "hybrid", HYBRID_BM25) else None)))
            scored = score_run(run, qrels, unit.measures)
            scores[system] = scored.values
            coverage = scored
        model_rows = tuple(s for s in runs if s in (*MODES, HYBRID_BM25))
        paired = paired_against(runs, qrels, unit.measures[0])
        paired_backbone = paired_against(runs, qrels, unit.measures[0], BM25_BACKBONE, model_rows)
        warning = coverage.warning() if coverage else None
        if warning:
            from tqdm import tqdm

            tqdm.write(f"warning: {unit.key}: {warning}")
        result = provenance(unit=unit.key, collection=unit.name, split=split, status="ok", scores=scores,
                            queries=len(queries), judged_queries=len(qrels),
                            **(coverage.coverage() if coverage else {}), coverage_warning=warning,
                            drop_query_id=drop, paired=paired, paired_backbone=paired_backbone,
                            lengths={"doc_max_length": doc_len, "query_max_length": query_len},
                            encoder=self.args.encoder, index=str(index) if self.args.modes else None, runs=run_files,
                            baseline_backbone=self.args.baseline_backbone,
                            fusion=asdict(self.fusion), dense_search=dense_search, dense_index=dense_index,
                            depends_on=depends_on,
                            seconds={k: round(v, 2) for k, v in timings.items()})
        write_json(path, result)
        return result

    def _write_run(self, unit: Unit, system: str, run, info: dict) -> Path:
        """A run as a TREC file under ``<runs>/<suite>/<encoder|bm25|backbone>/`` with its provenance."""
        folder, tag = ("bm25", "bm25") if system == "bm25" else (self.tag, f"{self.tag}-{system}")
        if system == BM25_BACKBONE:
            folder = tag = encoder_tag(self.backbone.checkpoint, self.backbone.fingerprint)
            info = dict(info, index=None, fusion="bm25 + backbone (mean pooling), pyserini.fusion --method normalize")
        path = self.runs_root / folder / f"{unit.key}.{system}.trec"
        return write_trec(path, run, tag, info, overwrite=True)  # eval's own runs

    @staticmethod
    def _reusable(path: Path, unit: Unit, depends_on: dict) -> dict | None:
        """A finished result file, when it holds the unit's measures and was computed from the same
        checkpoint, corpus and settings; else None (computed again, and said why)."""
        from ..fingerprint import changes

        try:
            done = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(done, dict) or done.get("status") != "ok" or not isinstance(done.get("scores"), dict):
            return None
        if not set(unit.measures) <= set(next(iter(done["scores"].values()), {})):
            return None
        recorded = done.get("depends_on")
        if recorded != depends_on:
            from tqdm import tqdm

            why = changes(recorded, depends_on) if isinstance(recorded, dict) else ["no fingerprints recorded"]
            tqdm.write(f"{unit.key}: computed again: {'; '.join(why[:3])}")
            return None
        done["reused"] = True
        return done

    def run(self, units: list[Unit]) -> list[dict]:
        from tqdm import tqdm

        from ..encode.distributed import is_worker

        results, cache = [], {}
        worker = is_worker()
        bar = tqdm(units, desc=f"eval {self.suite}", unit="collection", disable=worker)
        for unit in bar:
            bar.set_postfix_str(unit.key)
            res = self.run_unit(unit, cache)
            results.append(res)
            if worker:
                continue
            if res["status"] != "ok":
                tqdm.write(f"{unit.key}: missing ({res['reason']})")
            else:
                tqdm.write(f"{unit.key}: " + "  ".join(
                    f"{s} {m}={v:.4f}" for s, sc in res["scores"].items() for m, v in sc.items()
                    if m == unit.measures[0]))
        return results


