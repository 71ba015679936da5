"""The index folder layout of ``python -m dupmae_ir.encode``, read and checked in one place.

An index folder holds

- ``dense/index`` + ``dense/docid``: a FAISS index (inner product) and one document id per line, in
  insertion order: what Pyserini's ``FaissSearcher`` reads;
- ``impact/``: a Lucene impact index (Anserini ``JsonVectorCollection``, ``--impact --pretokenized``);
- ``dupmae_index.json``: provenance (encoder, ``RepresentationConfig`` with the quantisation scales
  ``s_q``/``s_d``, top-k and activation, corpus, counts).

:func:`load_index` checks, before any model or JVM starts, that the provenance parses, that the
FAISS index, the docid list and the provenance agree on the number of documents, and that the
Lucene folder holds a committed index; :func:`check_lucene_count` compares Lucene's own count once the
JVM is up. Encoded queries (``encode --queries``) are read from ``.npy`` + JSONL only: the
``dense/embedding.pkl`` written beside them is for stock Pyserini and never loaded here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import IndexFormatError
from .outputs import OutputKind

INDEX_META = "dupmae_index.json"
QUERIES_META = "dupmae_queries.json"
INDEX_OUTPUT = OutputKind("dupmae_ir index", INDEX_META, ("dupmae_index",))
SHARD_OUTPUT = OutputKind("dupmae_ir index shard", INDEX_META, ("dupmae_shard",))
QUERIES_OUTPUT = OutputKind("folder of encoded queries", QUERIES_META, ("dupmae_queries",))
RETRIEVER_FIELDS = ("doc_scale", "query_scale", "doc_topk", "query_topk", "query_min_weight", "activation",
                    "query_terms")
# encoded queries: dense vectors as .npy rows aligned with the lines of a JSONL file (safe to read)
QUERY_VECTORS = "dense/embedding.npy"
QUERY_ROWS = "dense/queries.jsonl"
QUERY_PICKLE = "dense/embedding.pkl"  # written for stock Pyserini's --encoded-queries only
QUERY_IMPACTS = "impact.jsonl"
QUERY_TOPICS = "topics.tsv"


def _rebuild_fix(root: Path) -> str:
    return f"re-build it with `python -m dupmae_ir.encode --corpus ... --output {root} --overwrite`"


def read_json(path: Path, what: str, fix: str) -> dict:
    """A JSON object file, or an :class:`IndexFormatError` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(path, f"missing ({what})", fix) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(path, f"malformed {what} ({e})", fix) from None
    if not isinstance(data, dict):
        raise IndexFormatError(path, f"malformed {what} (not a JSON object)", fix)
    return data


def count_lines(path: Path) -> int:
    """Number of ``\\n``-terminated lines (read in 1 MiB blocks)."""
    n = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


@dataclass(frozen=True)
class IndexInfo:
    """The sub-indexes of an encode output folder and what made them."""

    root: Path
    dense: Path | None
    impact: Path | None
    encoder: str
    retriever: dict  # the RepresentationConfig fields in RETRIEVER_FIELDS
    docs: int
    meta: dict = field(default_factory=dict, repr=False)

    @property
    def alpha(self) -> float:
        """``1 / (s_q * s_d)``: the sparse weight that turns integer impact scores back into
        ``mu_q . mu_d`` (paper section 3.4)."""
        return 1.0 / (float(self.retriever["query_scale"]) * float(self.retriever["doc_scale"]))


def _find_fields(meta: dict) -> dict:
    """The RepresentationConfig fields from ``dupmae_index.json`` (top level or one nested dict)."""
    candidates = [meta] + [v for v in meta.values() if isinstance(v, dict)]
    for c in candidates:
        if all(f in c for f in ("doc_scale", "query_scale")):
            return {f: c[f] for f in RETRIEVER_FIELDS if f in c}
    return {}


def load_index(index_dir: str | os.PathLike, check: bool = True) -> IndexInfo:
    """Read an encode output folder. With ``check``, also verify that the FAISS index, the docid list
    and the provenance agree on the document count and that the Lucene folder holds a committed index;
    every problem is an :class:`IndexFormatError` naming the file."""
    root = Path(index_dir)
    meta_path = root / INDEX_META
    if not meta_path.is_file():
        raise IndexFormatError(root, f"not a dupmae_ir index folder (no {INDEX_META})",
                               f"build it with `python -m dupmae_ir.encode --corpus ... --output {root}`")
    meta = read_json(meta_path, "index provenance", _rebuild_fix(root))
    if meta.get("kind") == "dupmae_shard":
        raise IndexFormatError(root, "is one shard of an index, not a searchable index",
                               "merge the shards with `python -m dupmae_ir.encode merge --inputs ... --output DIR`")
    retriever = _find_fields(meta)
    if not retriever:
        raise IndexFormatError(meta_path, "no 'doc_scale'/'query_scale' fields; impact scores cannot be de-quantised",
                               _rebuild_fix(root))
    has_dense = meta.get("dense", True) is not None
    has_impact = meta.get("impact", True) is not None
    dense, impact = root / "dense", root / "impact"
    needed = ([(dense / "index", "FAISS index"), (dense / "docid", "FAISS docid list")] if has_dense else []) + \
             ([(impact, "Lucene impact index")] if has_impact else [])
    for path, what in needed:
        if not path.exists():
            raise IndexFormatError(path, f"{what} missing", _rebuild_fix(root))
    encoder = meta.get("encoder") or meta.get("model_name_or_path") or meta.get("encoder_path") or "default"
    if isinstance(encoder, dict):
        encoder = encoder.get("path") or encoder.get("model_name_or_path") or "default"
    docs = meta.get("docs")
    info = IndexInfo(root, dense if has_dense else None, impact if has_impact else None, str(encoder), retriever,
                     int(docs) if isinstance(docs, int) else -1, meta)
    if check:
        check_index_files(info)
    return info


def check_index_files(info: IndexInfo) -> None:
    """FAISS ``ntotal`` = docid lines = provenance ``docs``; the Lucene folder has a ``segments_N``."""
    fix = _rebuild_fix(info.root)
    if info.dense is not None:
        import faiss

        docid = info.dense / "docid"
        n_ids = count_lines(docid)
        try:
            index = faiss.read_index(str(info.dense / "index"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as e:
            raise IndexFormatError(info.dense / "index", f"not a readable FAISS index ({str(e).splitlines()[0][:200]})",
                                   fix) from None
        if index.ntotal != n_ids:
            raise IndexFormatError(docid, f"holds {n_ids} document ids but the FAISS index holds "
                                          f"{index.ntotal} vectors",
                                   fix)
        if info.docs >= 0 and n_ids != info.docs:
            raise IndexFormatError(docid, f"holds {n_ids} document ids but {INDEX_META} records {info.docs} documents",
                                   fix)
    if info.impact is not None and not any(info.impact.glob("segments_*")):
        raise IndexFormatError(info.impact, "is not a Lucene index (no segments_N file)", fix)


def check_lucene_count(info: IndexInfo, num_docs: int) -> None:
    """Lucene's document count (read once the JVM runs) must equal the provenance's."""
    if info.docs >= 0 and num_docs != info.docs:
        raise IndexFormatError(info.impact, f"Lucene holds {num_docs} documents but {INDEX_META} records {info.docs}",
                               _rebuild_fix(info.root))


# ------------------------------------------------------------------------------------------------
# encoded queries
# ------------------------------------------------------------------------------------------------
@dataclass
class EncodedQueries:
    """Pre-encoded queries keyed by query text (as Pyserini looks them up): ``dense[text]`` (d,),
    ``impacts[text]`` ``{token: int}``. Read with :func:`load_encoded_queries`."""

    dense: dict
    impacts: dict
    folder: Path
    meta: dict = field(default_factory=dict, repr=False)  # dupmae_queries.json ({} for a folder made by hand)

    def batch(self, texts: Sequence[str]):
        """The representations of ``texts``, in the shape of :class:`dupmae_ir.inference.EncodedBatch`."""
        import numpy as np

        from .inference import EncodedBatch

        missing = [t for t in texts if t.strip() not in self.dense or t.strip() not in self.impacts]
        if missing:
            raise IndexFormatError(self.folder, f"{len(missing)} query text(s) not pre-encoded, e.g. {missing[0]!r}",
                                   "encode these topics with `python -m dupmae_ir.encode --queries ...`, or drop "
                                   "--encoded-queries")
        dense = np.stack([self.dense[t.strip()] for t in texts]).astype(np.float32)  # (B, d)
        return EncodedBatch(dense, [self.impacts[t.strip()] for t in texts])


def read_query_vectors(folder: str | os.PathLike) -> dict:
    """``{text: (d,) float32}`` from ``dense/embedding.npy`` + ``dense/queries.jsonl`` (no pickle)."""
    import numpy as np

    from .data.readers import _parse_json, iter_lines

    folder = Path(folder)
    vectors_path, rows_path = folder / QUERY_VECTORS, folder / QUERY_ROWS
    fix = "re-encode the queries with `python -m dupmae_ir.encode --queries ... --output DIR`"
    for p in (vectors_path, rows_path):
        if not p.is_file():
            raise IndexFormatError(p, "missing; encoded queries are read from dense/embedding.npy and "
                                      "dense/queries.jsonl (dense/embedding.pkl is for stock Pyserini and "
                                      "never loaded)",
                                   fix)
    try:
        vectors = np.load(vectors_path, allow_pickle=False)  # (Q, d)
    except ValueError as e:
        raise IndexFormatError(vectors_path, f"not a plain .npy array ({e})", fix) from None
    texts = [_parse_json(rows_path, n, line).get("text", "") for n, line in iter_lines(rows_path)]
    if vectors.ndim != 2 or len(texts) != vectors.shape[0]:
        raise IndexFormatError(rows_path, f"{len(texts)} rows for {vectors.shape} vectors in {vectors_path.name}", fix)
    return {str(t).strip(): vectors[i].astype(np.float32) for i, t in enumerate(texts)}


def load_encoded_queries(folder: str | os.PathLike) -> EncodedQueries:
    """Read the output of :func:`dupmae_ir.encode.encode_queries`: dense vectors (``.npy`` + JSONL)
    and ``impact.jsonl`` (``contents``/``vector``, what Pyserini's impact ``--encoder *.jsonl`` reads)."""
    from .data.readers import _parse_json, iter_lines

    folder = Path(folder)
    dense = read_query_vectors(folder)
    jsonl = folder / QUERY_IMPACTS
    if not jsonl.is_file():
        raise IndexFormatError(jsonl, "missing",
                               "re-encode the queries with `python -m dupmae_ir.encode --queries ...`")
    impacts = {}
    for lineno, line in iter_lines(jsonl):
        obj = _parse_json(jsonl, lineno, line)
        try:
            impacts[str(obj["contents"]).strip()] = {str(k): int(v) for k, v in obj["vector"].items()}
        except (KeyError, AttributeError, TypeError, ValueError):
            raise IndexFormatError(f"{jsonl}:{lineno}", "expected {\"contents\": text, \"vector\": {token: int}}",
                                   "re-encode the queries") from None
    meta = read_json(folder / QUERIES_META, "queries provenance", "re-encode the queries") \
        if (folder / QUERIES_META).is_file() else {}
    return EncodedQueries(dense, impacts, folder, meta)


def index_encoder_fingerprint(info: IndexInfo) -> dict | None:
    """The fingerprint of the checkpoint that built an index: the one recorded in its provenance
    (``inputs``), else, for an index written before fingerprints, that of the checkpoint it names as it
    is now (None when that folder is gone)."""
    from .errors import UserError
    from .fingerprint import checkpoint_fingerprint
    from .modeling.backbone import resolve_model_path

    inputs = info.meta.get("inputs")
    if isinstance(inputs, dict) and isinstance(inputs.get("encoder"), dict):
        return inputs["encoder"]
    try:
        return checkpoint_fingerprint(resolve_model_path(info.encoder))
    except (UserError, RuntimeError, OSError):
        return None


def check_query_encoder(queries: EncodedQueries, info: IndexInfo) -> None:
    """Pre-encoded queries must come from the checkpoint that built the index (their fingerprints,
    :mod:`dupmae_ir.fingerprint`): another model's query vectors score against these documents without
    any error, and meaninglessly."""
    from .errors import UserError
    from .fingerprint import fingerprint_id

    fix = (f"encode the topics with the index's encoder (`python -m dupmae_ir.encode --queries ... --encoder "
           f"{info.encoder}`), or pass --allow-other-encoder to search with these queries anyway")
    mine = queries.meta.get("encoder_fingerprint")
    if not isinstance(mine, dict):
        raise UserError(queries.folder / QUERIES_META, "records no encoder fingerprint: it cannot be checked "
                                                       "against the index's encoder", fix)
    theirs = index_encoder_fingerprint(info)
    if theirs is not None and mine != theirs:
        raise UserError(queries.folder, f"was encoded by {queries.meta.get('encoder')} (fingerprint "
                                        f"{fingerprint_id(mine)}), not by the index's encoder {info.encoder} "
                                        f"(fingerprint {fingerprint_id(theirs)})", fix)
