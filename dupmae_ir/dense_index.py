"""The FAISS index types of the dense side (inner product), picked by corpus size: build, provenance
and search-time knobs, in one place.

- ``flat``: ``IndexFlatIP``, exact, 4d bytes per vector;
- ``flat-int8``: ``IndexScalarQuantizer`` (``QT_8bit``), exhaustive on int8 codes, d bytes;
- ``hnsw``: ``IndexHNSWFlat`` (``M``, ``efConstruction``; ``efSearch`` at search), 4d + ~8M bytes;
- ``hnsw-int8``: ``IndexHNSWSQ`` (``QT_8bit``), d + ~8M bytes;
- ``ivfpq``: ``IndexIVFPQ`` (``nlist`` lists, ``pq_m`` x 8-bit codes; ``nprobe`` at search), pq_m + 8 bytes;
- ``pq``: ``IndexPQ``, exhaustive on ``pq_m`` x 8-bit codes.

Which type for which corpus size: docs/encoding.md.

:class:`DenseIndexSpec` holds a type and its build parameters; :func:`build_dense_index` builds it
from ``.npy`` files (training, when the type needs it, on the first vectors) and returns the record
written to ``dupmae_index.json``; :func:`apply_search_knobs` sets ``efSearch`` / ``nprobe`` through
``faiss.ParameterSpace`` at search time. The defaults ``efSearch`` 128 (FAISS's own is 16, which kept
0.8 of the flat top-100 on 2,000 SciFact documents) and ``nprobe`` 32 are also written into the index
file, so stock Pyserini's ``FaissSearcher`` reads the same defaults.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError

FAISS_KINDS = ("flat", "flat-int8", "hnsw", "hnsw-int8", "ivfpq", "pq")
HNSW_KINDS = ("hnsw", "hnsw-int8")  # the types --ef-search applies to
IVF_KINDS = ("ivfpq",)  # the types --nprobe applies to
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE = 32
PQ_MIN_TRAIN = 256  # 8-bit codebooks: 256 centroids per sub-quantiser
TRAIN_VECTORS = 65536  # training sample (the first vectors, deterministic); IVF takes 39 per list if more


@dataclass(frozen=True)
class DenseIndexSpec:
    """A FAISS index type and its build parameters (the ``encode`` flags of the same names).

    ``hnsw_m``/``ef_construction``: HNSW graph degree and build beam (``hnsw``, ``hnsw-int8``);
    ``pq_m``: PQ sub-quantisers, 8 bits each (``ivfpq``, ``pq``; default d/4, must divide d);
    ``nlist``: IVF lists (``ivfpq``; default 4*sqrt(N), at most N/39); ``ef_search``/``nprobe``: the
    search defaults written into the index file (a searcher's knobs override them)."""

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    pq_m: int | None = None
    nlist: int | None = None
    ef_search: int = DEFAULT_EF_SEARCH
    nprobe: int = DEFAULT_NPROBE

    def __post_init__(self):
        if self.kind not in FAISS_KINDS:
            raise UserError("--faiss", f"unknown index type {self.kind!r}", f"valid: {', '.join(FAISS_KINDS)}")
        for flag, value, low in (("--hnsw-m", self.hnsw_m, 2), ("--ef-construction", self.ef_construction, 1),
                                 ("--pq-m", self.pq_m, 1), ("--nlist", self.nlist, 1),
                                 ("--ef-search", self.ef_search, 1), ("--nprobe", self.nprobe, 1)):
            if value is not None and value < low:
                raise UserError(flag, f"is {value}", f"pass an integer >= {low}")

    def build_params(self) -> dict:
        """The parameters that matter for this type (what provenance records)."""
        keep = {"flat": (), "flat-int8": (), "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
                "hnsw-int8": ("hnsw_m", "ef_construction", "ef_search"), "ivfpq": ("pq_m", "nlist", "nprobe"),
                "pq": ("pq_m",)}[self.kind]
        return {k: v for k, v in asdict(self).items() if k in keep}

    def label(self) -> str:
        """A folder-name form of the type and its build parameters, e.g. ``hnsw-m32-efc200`` (``eval``
        keys a non-flat type's indexes, runs and reports by it)."""
        auto = lambda v: "auto" if v is None else v  # noqa: E731 - resolved from the corpus at build time
        if self.kind in HNSW_KINDS:
            return f"{self.kind}-m{self.hnsw_m}-efc{self.ef_construction}"
        if self.kind == "ivfpq":
            return f"ivfpq-pq{auto(self.pq_m)}-nlist{auto(self.nlist)}"
        return f"pq-pq{auto(self.pq_m)}" if self.kind == "pq" else self.kind

    def differs_from(self, recorded: dict) -> list[str]:
        """How an index's recorded ``dense`` provenance differs from this spec (``["type 'flat'"]``...); a
        parameter this spec leaves to its default-from-the-corpus (None) matches any recorded value."""
        if recorded.get("faiss", self.kind) != self.kind:
            return [f"type {recorded['faiss']!r}, not {self.kind!r}"]
        params = recorded.get("params") or {}
        return [f"{k} {params[k]}, not {v}" for k, v in self.build_params().items()
                if v is not None and k in params and params[k] != v and k not in ("ef_search", "nprobe")]

    def search_knobs(self, ef_search: int | None = None, nprobe: int | None = None, where: str = "--faiss") -> dict:
        """The knobs a search of an index of this type runs with (:func:`apply_search_knobs`'s record,
        ``nprobe`` not yet capped by the list count), checked before any index exists."""
        hnsw, ivf = self.kind in HNSW_KINDS, self.kind in IVF_KINDS
        _check_knobs(ef_search, nprobe, hnsw, ivf, self.kind, where)
        return _knobs_record(self.kind, ef_search, nprobe, hnsw, ivf)


def dense_spec(faiss: str | DenseIndexSpec = "flat", hnsw_m: int = 32, pq_m: int | None = None) -> DenseIndexSpec:
    """``faiss`` as a :class:`DenseIndexSpec` (a type name takes ``hnsw_m``/``pq_m``, the older arguments)."""
    if isinstance(faiss, DenseIndexSpec):
        return faiss
    return DenseIndexSpec(str(faiss), hnsw_m=hnsw_m, pq_m=pq_m)


def _resolve(spec: DenseIndexSpec, dim: int, n: int) -> DenseIndexSpec:
    """``pq_m``/``nlist`` defaults for ``dim`` dimensions and ``n`` vectors, checked."""
    from dataclasses import replace

    if spec.kind in ("ivfpq", "pq"):
        pq_m = spec.pq_m or max(1, dim // 4)
        if dim % pq_m:
            raise UserError("--pq-m", f"{pq_m} does not divide the dense dimension {dim}",
                            f"pass a divisor of {dim}, e.g. {max(1, dim // 4)} or {max(1, dim // 8)}")
        spec = replace(spec, pq_m=pq_m)
    if spec.kind == "ivfpq":
        nlist = spec.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        if nlist > n:
            raise UserError("--nlist", f"{nlist} lists for {n} documents", f"pass --nlist <= {n} (default 4*sqrt(N))")
        spec = replace(spec, nlist=nlist)
    return spec


def _new_index(spec: DenseIndexSpec, dim: int):
    """An empty FAISS index of ``spec`` (inner product)."""
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.kind == "flat-int8":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, ip)
    if spec.kind in ("hnsw", "hnsw-int8"):
        index = (faiss.IndexHNSWFlat(dim, spec.hnsw_m, ip) if spec.kind == "hnsw"
                 else faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, spec.hnsw_m, ip))
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search  # stored in the file: stock Pyserini's default too
        return index
    if spec.kind == "ivfpq":
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, spec.nlist, spec.pq_m, 8, ip)
        index.nprobe = min(spec.nprobe, spec.nlist)
        return index
    return faiss.IndexPQ(dim, spec.pq_m, 8, ip)


def _training_sample(npy_files: list[Path], spec: DenseIndexSpec):
    """The first vectors of the corpus (deterministic): 65,536, or 39 per IVF list when more."""
    import numpy as np

    want = max(TRAIN_VECTORS, 39 * (spec.nlist or 0))
    sample, n = [], 0
    for f in npy_files:
        sample.append(np.load(f))
        n += len(sample[-1])
        if n >= want:
            break
    train = np.ascontiguousarray(np.concatenate(sample)[:want], dtype=np.float32)  # (n, d)
    if spec.kind in ("ivfpq", "pq") and len(train) < PQ_MIN_TRAIN:
        raise UserError("--faiss", f"{spec.kind} needs at least {PQ_MIN_TRAIN} documents to train its codebooks; "
                                   f"got {len(train)}", "use --faiss flat or flat-int8 for a corpus this small")
    return train


def build_dense_index(npy_files: list[Path], docid_files: list[Path], out_dir: Path, spec: DenseIndexSpec) -> dict:
    """Write ``out_dir/index`` (FAISS) and ``out_dir/docid`` from chunk files, in order; returns the
    provenance record (type, build parameters, dimension, counts, training size, bytes)."""
    import faiss
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    dim = np.load(npy_files[0], mmap_mode="r").shape[1] if npy_files else 0
    n = sum(np.load(f, mmap_mode="r").shape[0] for f in npy_files)
    spec = _resolve(spec, dim, n)
    index = _new_index(spec, dim)
    trained_on = 0
    if not index.is_trained:
        train = _training_sample(npy_files, spec)
        index.train(train)
        trained_on = len(train)
    with open(out_dir / "docid", "w", encoding="utf-8") as ids_out:
        for npy, ids in zip(npy_files, docid_files):
            index.add(np.ascontiguousarray(np.load(npy), dtype=np.float32))  # (n, d)
            ids_out.write(ids.read_text(encoding="utf-8"))
    if spec.kind == "ivfpq":
        index.make_direct_map()  # row -> vector (explanations reconstruct a document's vector)
    try:
        faiss.write_index(index, str(out_dir / "index"))
    except RuntimeError as e:  # FAISS reports a failed fwrite (disk full) as a C++ exception
        from .errors import OutputError

        raise OutputError(out_dir / "index", f"could not be written ({str(e).splitlines()[-1][:200]})",
                          "free disk space (or raise the file-size limit) and re-run the same command: "
                          "finished chunks are kept") from e
    return {"path": "dense", "faiss": spec.kind, "params": spec.build_params(), "faiss_class": type(index).__name__,
            "dim": int(dim), "metric": "inner_product", "docs": int(index.ntotal), "trained_on": trained_on,
            "bytes": (out_dir / "index").stat().st_size}


# ------------------------------------------------------------------------------------------------
# search-time knobs
# ------------------------------------------------------------------------------------------------
def index_kind(index, meta: dict | None = None) -> str:
    """The type of a FAISS index: from the index provenance when it records one, else from the object."""
    import faiss

    recorded = (meta or {}).get("dense") or {}
    if isinstance(recorded, dict) and recorded.get("faiss") in FAISS_KINDS:
        return recorded["faiss"]
    name = type(faiss.downcast_index(index)).__name__
    return {"IndexFlatIP": "flat", "IndexFlat": "flat", "IndexScalarQuantizer": "flat-int8",
            "IndexHNSWFlat": "hnsw", "IndexHNSWSQ": "hnsw-int8", "IndexIVFPQ": "ivfpq", "IndexPQ": "pq"}.get(name, name)


def apply_search_knobs(index, ef_search: int | None = None, nprobe: int | None = None, where: str = "index",
                       kind: str | None = None) -> dict:
    """Set ``efSearch`` (HNSW) and ``nprobe`` (IVF) on ``index`` through ``faiss.ParameterSpace``; None
    takes the defaults (128, and 32 capped by the list count). Returns ``{"faiss": kind, knob: value}``
    as applied (for run provenance). A knob the index type lacks is a :class:`UserError`."""
    import faiss

    kind = kind or index_kind(index)
    hnsw = hasattr(faiss.downcast_index(index), "hnsw")
    ivf = faiss.try_extract_index_ivf(index)
    _check_knobs(ef_search, nprobe, hnsw, ivf is not None, kind, where)
    applied = _knobs_record(kind, ef_search, nprobe, hnsw, ivf is not None)
    space = faiss.ParameterSpace()
    if hnsw:
        space.set_index_parameter(index, "efSearch", applied["ef_search"])
    if ivf is not None:
        applied["nprobe"] = min(applied["nprobe"], int(ivf.nlist))
        space.set_index_parameter(index, "nprobe", applied["nprobe"])
    return applied


def _check_knobs(ef_search, nprobe, hnsw: bool, ivf: bool, kind: str, where) -> None:
    """A knob the index type lacks, or below 1, is a :class:`UserError`."""
    for flag, value, has, what in (("--ef-search", ef_search, hnsw, "HNSW"), ("--nprobe", nprobe, ivf, "IVF")):
        if value is not None and not has:
            raise UserError(flag, f"applies to {what} indexes; {where} is a {kind!r} index", f"drop {flag}")
        if value is not None and value < 1:
            raise UserError(flag, f"is {value}", "pass an integer >= 1")


def _knobs_record(kind: str, ef_search, nprobe, hnsw: bool, ivf: bool) -> dict:
    """``{"faiss": kind, "ef_search"|"nprobe": value}``: the knobs in force, None taking the defaults."""
    record: dict = {"faiss": kind}
    if hnsw:
        record["ef_search"] = int(ef_search or DEFAULT_EF_SEARCH)
    if ivf:
        record["nprobe"] = int(nprobe or DEFAULT_NPROBE)
    return record
