"""Resolve a collection name (bundled default, ir_datasets id, or local path) to a :class:`Collection`.

Resolution never touches the network: a name that is neither a known id nor an existing path fails
at once with the closest known names. Documents, queries and qrels are read only when asked for.
"""
from __future__ import annotations

import difflib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .readers import (
    MAX_LINE_BYTES,
    CorpusStats,
    check_empty_policy,
    check_id,
    iter_jsonl_corpus,
    keep_document,
    load_qrels_file,
    load_queries_file,
)
from .types import DataError, Doc

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "resources" / "scifact"
DEFAULT_NAME = "default"

# The 18 BEIR collections of the DupMAE paper's table (cqadupstack = the mean of its 12 forums).
BEIR_DATASETS = (
    "trec-covid", "bioasq", "nfcorpus", "nq", "hotpotqa", "fiqa", "signal1m", "trec-news", "robust04",
    "arguana", "webis-touche2020", "cqadupstack", "quora", "dbpedia-entity", "scidocs", "fever",
    "climate-fever", "scifact",
)
CQADUPSTACK_FORUMS = (
    "android", "english", "gaming", "gis", "mathematica", "physics", "programmers", "stats", "tex",
    "unix", "webmasters", "wordpress",
)
# BEIR sets that ir_datasets does not distribute (licensing): they need a local folder (--data-dir).
BEIR_LOCAL_ONLY = ("bioasq", "signal1m", "trec-news", "robust04")
# BEIR's evaluation drops a hit whose docid equals the query id on these sets (the query is itself a
# document of the corpus); see BEIR's EvaluateRetrieval.evaluate(ignore_identical_ids=True).
DROP_QUERY_ID_DATASETS = ("arguana", "quora")
# ir_datasets sub-ids that hold each BEIR set's evaluation queries and qrels.
BEIR_EVAL_IDS = {
    "nfcorpus": "beir/nfcorpus/test", "hotpotqa": "beir/hotpotqa/test", "fiqa": "beir/fiqa/test",
    "quora": "beir/quora/test", "dbpedia-entity": "beir/dbpedia-entity/test", "fever": "beir/fever/test",
    "scifact": "beir/scifact/test", "webis-touche2020": "beir/webis-touche2020/v2",
}
# Short split names for MS MARCO passage -> ir_datasets ids.
MSMARCO_SPLITS = {
    "dev": "msmarco-passage/dev/small", "dev-small": "msmarco-passage/dev/small",
    "dl19": "msmarco-passage/trec-dl-2019/judged", "dl20": "msmarco-passage/trec-dl-2020/judged",
    "train": "msmarco-passage/train/judged",
}


def beir_ir_ids() -> list[str]:
    """ir_datasets ids of the BEIR collections (cqadupstack expanded into its forums)."""
    ids = []
    for name in BEIR_DATASETS:
        if name in BEIR_LOCAL_ONLY:
            continue
        if name == "cqadupstack":
            ids += [f"beir/cqadupstack/{f}" for f in CQADUPSTACK_FORUMS]
        else:
            ids.append(f"beir/{name}")
    return ids


def known_names() -> list[str]:
    """Names resolvable without a path: the bundled default, and the ids of ir_datasets' registry
    for MS MARCO passage and BEIR (plus the local-only BEIR names, which need --data-dir)."""
    names = {DEFAULT_NAME, "msmarco-passage", *MSMARCO_SPLITS.values(), *beir_ir_ids()}
    names |= {f"beir/{n}" for n in BEIR_DATASETS}
    try:
        import ir_datasets

        names |= {k for k in ir_datasets.registry._registered if k.startswith(("beir", "msmarco-passage"))}
    except ImportError:  # pragma: no cover
        pass
    return sorted(names)


@dataclass(frozen=True)
class Collection:
    """A resolved collection: where its documents, queries and qrels come from.

    ``kind`` is ``beir`` (a local BEIR folder, the bundled default included), ``jsonl`` (a Pyserini
    JSONL collection: documents only), ``topics`` (a queries file: queries only), ``qrels`` (a qrels
    file: qrels only; a file named ``*qrels*`` or inside a ``qrels/`` folder) or ``ir_datasets``.
    ``max_line_bytes``: the longest document read (a JSONL line, or an ir_datasets document's characters).
    """

    name: str
    kind: str
    path: Path | None = None
    ir_id: str | None = None
    default_split: str | None = None
    max_line_bytes: int = MAX_LINE_BYTES

    @property
    def reference(self) -> str:
        """What an index records as its corpus (:func:`resolve` maps it back): a name, or a local absolute path."""
        if self.kind == "ir_datasets" or self.path is None or self.name == DEFAULT_NAME:
            return self.name
        return str(self.path.resolve())

    # --- documents -------------------------------------------------------------------------
    def corpus_files(self) -> list[Path]:
        if self.kind == "beir":
            for fname in ("corpus.jsonl", "corpus.jsonl.gz"):
                if (self.path / fname).is_file():
                    return [self.path / fname]
            return []
        if self.kind == "jsonl":
            if self.path.is_file():
                return [self.path]
            return sorted(p for p in self.path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz", ".json")))
        return []

    def has_corpus(self) -> bool:
        """Whether documents are available (for ir_datasets: the id has docs; they may still need a download)."""
        if self.kind == "ir_datasets":
            return self.ir_id not in {f"beir/{n}" for n in BEIR_LOCAL_ONLY}
        return bool(self.corpus_files())

    def iter_docs(self, empty: str = "keep", stats: CorpusStats | None = None,
                  check_duplicates: bool = True) -> Iterator[Doc]:
        """Stream the documents as :class:`Doc` (a generator: nothing is read before the first ``next``).

        ``empty``: what to do with a document whose title and text are both empty: ``keep`` (default;
        yielded and counted in ``stats.empty``), ``skip`` (dropped, counted, ids in
        ``stats.skipped_empty``) or ``error``. ``stats`` (a :class:`CorpusStats`) is filled while
        streaming. Memory is flat in corpus size but for the duplicate-id check of local files (the
        set of ids; ``check_duplicates=False`` turns it off).
        """
        check_empty_policy(empty)
        if self.kind == "ir_datasets":
            return _iter_ir_datasets_docs(self.ir_id, empty, stats, self.max_line_bytes)
        files = self.corpus_files()
        if not files:
            raise DataError(self.name, f"no documents (expected corpus.jsonl[.gz] in {self.path})",
                            "pass a collection that has documents (this one holds only queries/qrels)")
        return iter_jsonl_corpus(files, empty=empty, stats=stats, check_duplicates=check_duplicates,
                                 max_line_bytes=self.max_line_bytes)

    def doc_count(self) -> int | None:
        """Number of documents when cheaply known (for progress bars), else None."""
        if self.kind == "ir_datasets":
            try:
                return _ir_load(self.ir_id).docs_count()
            except Exception:  # noqa: BLE001 - a count is a nicety, never a failure
                return None
        return None

    # --- queries and qrels -------------------------------------------------------------------
    def splits(self) -> list[str]:
        if self.kind == "beir":
            return _beir_splits(self.path)
        if self.kind == "ir_datasets" and self.ir_id.startswith("msmarco-passage"):
            return ["dev", "dl19", "dl20"]
        return [self.default_split] if self.default_split else []

    def queries(self, split: str | None = None) -> dict[str, str]:
        """``{qid: text}`` of ``split`` (default: the collection's evaluation split)."""
        split = split or self.default_split
        # asked for queries, a file is read as queries whatever its name: the caller's flag decides
        if self.kind == "topics" or (self.kind == "jsonl" and self.path.is_file()):
            return load_queries_file(self.path)
        if self.kind == "qrels":
            raise DataError(self.name, "a qrels file holds no queries", "pass a queries/topics file")
        if self.kind == "beir":
            per_split = self.path / f"queries.{split}.jsonl"
            if split and per_split.is_file():
                return load_queries_file(per_split)
            if not (self.path / "queries.jsonl").is_file():
                raise DataError(self.path, f"no queries for split {split!r} (neither queries.{split}.jsonl nor "
                                           "queries.jsonl)", f"pass one of the splits {self.splits()}")
            all_queries = load_queries_file(self.path / "queries.jsonl")
            if not split:
                return all_queries
            qrels = self.qrels(split)  # BEIR convention: a split's queries are those judged in it
            return {qid: all_queries[qid] for qid in all_queries if qid in qrels}
        if self.kind == "ir_datasets":
            ir_id = _ir_split_id(self.ir_id, split)
            ds = _ir_load(ir_id)
            if not ds.has_queries():
                raise DataError(ir_id, "this ir_datasets id has no queries",
                                f"name a split (for example '{self.ir_id}/test')")
            queries: dict[str, str] = {}
            with _ir_guard(ir_id, "queries"):
                for n, q in enumerate(ds.queries_iter(), start=1):
                    queries[check_id(q.query_id, f"{ir_id} query #{n}", "query id")] = _query_text(q)
            return queries
        raise DataError(self.name, "a JSONL document collection holds no queries", "pass a queries file")

    def qrels(self, split: str | None = None) -> dict[str, dict[str, int]]:
        """``{qid: {docid: rel}}`` of ``split`` (default: the collection's evaluation split)."""
        split = split or self.default_split
        if self.kind == "qrels":
            return load_qrels_file(self.path)
        if self.kind == "topics":
            raise DataError(self.name, "a queries file holds no qrels", "pass a qrels file")
        if self.kind == "beir":
            path = self.path / "qrels" / f"{split}.tsv"
            if not path.is_file():
                raise DataError(path, f"no qrels for split {split!r}", f"pass one of the splits {self.splits()}")
            return load_qrels_file(path)
        if self.kind == "ir_datasets":
            ir_id = _ir_split_id(self.ir_id, split)
            ds = _ir_load(ir_id)
            if not ds.has_qrels():
                raise DataError(ir_id, "this ir_datasets id has no qrels",
                                f"name a split (for example '{self.ir_id}/test')")
            qrels: dict[str, dict[str, int]] = {}
            with _ir_guard(ir_id, "qrels"):
                for n, qr in enumerate(ds.qrels_iter(), start=1):
                    where = f"{ir_id} qrel #{n}"
                    qid = check_id(qr.query_id, where, "query id", "query_id")
                    qrels.setdefault(qid, {})[check_id(qr.doc_id, where, "document id", "doc_id")] = int(qr.relevance)
            return qrels
        raise DataError(self.name, "a JSONL document collection holds no qrels", "pass a qrels file")


def _beir_splits(path: Path) -> list[str]:
    """Splits of a local BEIR folder: ``qrels/<split>.tsv`` and ``queries.<split>.jsonl`` names."""
    names = {p.stem for p in (path / "qrels").glob("*.tsv")} if (path / "qrels").is_dir() else set()
    names |= {p.name[len("queries."):-len(".jsonl")] for p in path.glob("queries.*.jsonl")}
    return sorted(names)


def _query_text(q) -> str:
    text = getattr(q, "text", None)
    if text is None:  # e.g. TREC-style queries with title/description
        text = getattr(q, "title", "") or getattr(q, "query", "")
    return text


def _ir_load(ir_id: str):
    import ir_datasets

    try:
        return ir_datasets.load(ir_id)
    except KeyError:
        raise DataError(ir_id, "not an ir_datasets id",
                        f"use one of the close matches {close_matches(ir_id)}") from None


def _ir_split_id(ir_id: str, split: str | None) -> str:
    """The ir_datasets id that holds the queries/qrels of ``split`` for the collection ``ir_id``."""
    import ir_datasets

    registered = ir_datasets.registry._registered
    if ir_id.startswith("msmarco-passage") and split in MSMARCO_SPLITS:
        return MSMARCO_SPLITS[split]
    if split and f"{ir_id}/{split}" in registered:
        return f"{ir_id}/{split}"
    name = ir_id[len("beir/"):] if ir_id.startswith("beir/") else None
    if split in (None, "test") and name in BEIR_EVAL_IDS:
        return BEIR_EVAL_IDS[name]
    return ir_id


@contextmanager
def _ir_guard(ir_id: str, what: str):
    """Turn ir_datasets' download failures (it fetches files on first use) into a :class:`DataError`."""
    try:
        yield
    except DataError:
        raise
    except (OSError, RuntimeError) as e:  # requests' errors are OSErrors; "All download sources failed"
        home = os.environ.get("IR_DATASETS_HOME", "~/.ir_datasets")
        raise DataError(
            ir_id, f"ir_datasets could not provide the {what}: it downloads them on first use and the download "
                   f"failed ({type(e).__name__}: {str(e)[:300]})",
            f"run once with network access, or place the files ir_datasets expects under IR_DATASETS_HOME (now "
            f"{home}; for BEIR sets: {home}/beir/<name>/source.zip, the BEIR zip), or pass a local BEIR folder / "
            "JSONL collection path instead of the id") from e


def _iter_ir_datasets_docs(ir_id: str, empty: str, stats: CorpusStats | None,
                           max_chars: int = MAX_LINE_BYTES) -> Iterator[Doc]:
    stats = stats if stats is not None else CorpusStats()
    ds = _ir_load(ir_id)
    if not ds.has_docs():
        raise DataError(ir_id, "this ir_datasets id has no documents", "name the collection, not one of its splits")
    with _ir_guard(ir_id, "documents"):
        for n, d in enumerate(ds.docs_iter(), start=1):
            check_id(d.doc_id, f"{ir_id} document #{n}")
            title = (getattr(d, "title", "") or "").strip()
            text = (getattr(d, "text", "") or getattr(d, "body", "") or "").strip()
            if len(title) + len(text) > max_chars:
                raise DataError(f"{ir_id} document #{n}", f"document {d.doc_id!r} holds {len(title) + len(text)} "
                                                          f"characters, over the cap of {max_chars}",
                                "raise the cap (`dupmae_ir.encode --max-doc-bytes N`)")
            doc = Doc(d.doc_id, title, text)
            if not keep_document(doc, empty, stats, f"{ir_id} document #{n}"):
                continue
            stats.docs += 1
            yield doc


def close_matches(name: str, n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, known_names(), n=n, cutoff=0.4)


def resolve(name: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Collection:
    """Resolve a collection name or path; see the module docstring of :mod:`dupmae_ir.data`.

    With ``data_dir``, ``<data_dir>/<name>`` (``beir/`` prefix stripped) is tried first as a local
    BEIR folder, so ``--data-dir ../shared/data/beir`` serves ``scifact`` and ``beir/scifact`` alike.
    """
    if isinstance(name, Collection):
        return name
    text = _from_repr(str(name))
    if data_dir is not None:
        short = text[len("beir/"):] if text.startswith("beir/") else text
        local = Path(data_dir) / short
        if local.is_dir():
            return _local(local, text)
    if text in (DEFAULT_NAME, "scifact-bundled"):
        return Collection(DEFAULT_NAME, "beir", path=BUNDLED_DIR, default_split="test")
    path = Path(text).expanduser()
    if path.exists():
        return _local(path, text)
    if text in {f"beir/{n}" for n in BEIR_LOCAL_ONLY} | set(BEIR_LOCAL_ONLY):
        short = text[len("beir/"):] if text.startswith("beir/") else text
        raise DataError(repr(text), "ir_datasets does not distribute this BEIR set (licence)",
                        f"build its BEIR folder yourself and pass data_dir (--data-dir DIR, with "
                        f"DIR/{short}/corpus.jsonl) or the folder's path")
    if text in known_names():
        default_split = "dev" if text.startswith("msmarco-passage") else "test"
        return Collection(text, "ir_datasets", ir_id=text, default_split=default_split)
    looks_like_path = os.sep in text and not text.startswith(("beir/", "msmarco"))
    hint = "no such file or folder" if looks_like_path else "not a known collection id or an existing path"
    raise DataError(repr(text), f"{hint}; Close matches: {close_matches(text) or 'none'}",
                    f"pass '{DEFAULT_NAME}', an ir_datasets id such as 'msmarco-passage' or 'beir/scifact', "
                    "or a path to a BEIR folder / JSONL collection / topics file")


def _from_repr(text: str) -> str:
    """A collection recorded as its Python repr (as indexes built by the recipe once recorded it:
    ``Collection(name=..., path=PosixPath('...'))``) as the name or path it stands for; other text unchanged."""
    found = re.fullmatch(r"Collection\(name='([^']*)', kind='(\w+)', path=(?:\w*Path\('([^']*)'\)|None).*\)", text)
    if not found:
        return text
    name, kind, path = found.groups()
    return name if kind == "ir_datasets" or name == DEFAULT_NAME or not path else path


def _default_split(splits: list[str]) -> str | None:
    """The evaluation split of a local folder: ``test``, else ``dev-small``/``dev``, else the only one."""
    for split in ("test", "dev-small", "dev"):
        if split in splits:
            return split
    return splits[0] if len(splits) == 1 else None


def _local(path: Path, name: str) -> Collection:
    if path.is_dir():
        beir_files = ("corpus.jsonl", "corpus.jsonl.gz", "queries.jsonl")
        if (any((path / f).is_file() for f in beir_files) or (path / "qrels").is_dir()
                or any(path.glob("queries.*.jsonl"))):
            # BEIR layout; MS MARCO-style folders hold per-split queries.<split>.jsonl instead of queries.jsonl
            return Collection(name, "beir", path=path, default_split=_default_split(_beir_splits(path)))
        if any(p.name.endswith((".jsonl", ".jsonl.gz")) for p in path.iterdir()):
            return Collection(name, "jsonl", path=path)
        raise DataError(path, "folder is neither a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/) "
                              "nor a JSONL collection (*.jsonl files)", "pass a folder in one of these layouts")
    if "qrels" in path.name or path.parent.name == "qrels":
        return Collection(name, "qrels", path=path)
    if path.name.endswith((".tsv", ".txt")) or "queries" in path.name or "topics" in path.name:
        return Collection(name, "topics", path=path)
    if path.name.endswith((".jsonl", ".jsonl.gz", ".json")):
        return Collection(name, "jsonl", path=path)
    raise DataError(path, "unknown file type", "pass .jsonl[.gz] (documents or queries) or .tsv (topics)")


# Front doors that accept names as well as paths (exported by dupmae_ir.data).
def iter_corpus(name, empty: str = "keep", stats: CorpusStats | None = None) -> Iterator[Doc]:
    """Stream the documents of a collection name or path (see :func:`resolve`)."""
    return resolve(name).iter_docs(empty=empty, stats=stats)


def load_queries(name, split: str | None = None) -> dict[str, str]:
    """``{qid: text}`` of a collection name (with split) or of a queries/topics file."""
    return resolve(name).queries(split)


def load_qrels(name, split: str | None = None) -> dict[str, dict[str, int]]:
    """``{qid: {docid: rel}}`` of a collection name (with split) or of a qrels file."""
    return resolve(name).qrels(split)
