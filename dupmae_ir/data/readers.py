"""Streaming readers for local files, with errors that name file, line and field.

Formats: BEIR ``corpus.jsonl[.gz]`` (``_id``, ``title``, ``text``), Pyserini JSONL collections
(``id``, ``contents``), BEIR ``queries.jsonl`` (``_id``, ``text``), TSV topics (``qid<TAB>text``),
BEIR qrels TSV (``query-id corpus-id score`` header, CRLF tolerated) and TREC qrels
(``qid 0 docid rel``).
"""
from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .types import DataError, Doc

log = logging.getLogger(__name__)

EMPTY_POLICIES = ("keep", "skip", "error")


@dataclass
class CorpusStats:
    """Counts gathered while streaming a corpus (read them after the iterator is exhausted)."""

    docs: int = 0
    empty: int = 0
    skipped_empty: list[str] = field(default_factory=list)


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _field_of_bad_byte(raw: bytes) -> str:
    """`` in field 'x'`` when ``raw`` is a JSON object line whose field ``x`` holds the bad byte, else ``""``."""
    try:
        obj = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return ""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if "\ufffd" in str(value):
                return f" in field '{key}'"
    return ""


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line; line numbers start at 1.

    Decodes strictly as UTF-8; a bad byte raises :class:`DataError` naming file, line and column.
    Trailing ``\\r\\n``/``\\n`` are removed.
    """
    path = Path(path)
    with _open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: byte 0x{raw[e.start]:02x} at column {e.start + 1}{_field_of_bad_byte(raw)} "
                    "is not UTF-8. "
                    "Fix: re-encode the file as UTF-8 (for example `iconv -f latin1 -t utf-8`)."
                ) from None
            line = line.rstrip("\r\n")
            if lineno == 1:
                line = line.lstrip("\ufeff")  # a UTF-8 byte-order mark is not data
            if line.strip():
                yield lineno, line


def _parse_json(path: Path, lineno: int, line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}). "
                        "Fix: each line must be one JSON object.") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}. "
                        "Fix: each line must be one JSON object such as {\"id\": ..., \"contents\": ...}.")
    return obj


def _field(obj: dict, path: Path, lineno: int, names: tuple[str, ...], what: str) -> str:
    for name in names:
        if name in obj:
            value = obj[name]
            if value is None:
                value = ""
            if not isinstance(value, (str, int)):
                raise DataError(f"{path}:{lineno}: field '{name}' must be a string, got {type(value).__name__}. "
                                "Fix: write it as a JSON string.")
            return str(value)
    raise DataError(f"{path}:{lineno}: missing {what} field (expected one of {', '.join(repr(n) for n in names)}). "
                    f"Fields present: {sorted(obj)}. Fix: add the field to every line.")


def parse_doc(obj: dict, path: Path, lineno: int) -> Doc:
    """A BEIR (``_id``/``title``/``text``) or Pyserini (``id``/``contents``) corpus line as a :class:`Doc`."""
    doc_id = _field(obj, path, lineno, ("_id", "id", "docid"), "id")
    if not doc_id.strip():
        raise DataError(f"{path}:{lineno}: field 'id': empty document id. Fix: give every document a non-empty id.")
    if any(ch.isspace() for ch in doc_id):
        raise DataError(f"{path}:{lineno}: field 'id': document id {doc_id!r} contains whitespace, which TREC run files "
                        "cannot hold. Fix: remove whitespace from ids.")
    if "text" in obj or "title" in obj:
        text = _field(obj, path, lineno, ("text",), "text")
        title = str(obj.get("title") or "")
    else:
        text = _field(obj, path, lineno, ("contents", "text"), "text")
        title = ""
    return Doc(doc_id, title.strip(), text.strip())


def _first_location(paths: list[Path], doc_id: str) -> str:
    """``file:line`` of the first document with ``doc_id`` (error path only: rescans the files)."""
    for path in paths:
        for lineno, line in iter_lines(path):
            if doc_id in line and parse_doc(_parse_json(path, lineno, line), path, lineno).id == doc_id:
                return f"{path}:{lineno}"
    return "?"  # pragma: no cover


def iter_jsonl_corpus(paths: list[Path], empty: str = "keep", stats: CorpusStats | None = None,
                      check_duplicates: bool = True) -> Iterator[Doc]:
    """Stream documents from JSONL files, one line at a time.

    Memory holds only the set of ids seen so far, for the duplicate-id check (about 60 bytes per
    document); ``check_duplicates=False`` streams in constant memory.

    ``empty`` decides what happens to a document whose title and text are both empty: ``keep`` (it is
    yielded and counted; the default, so that every id reaches the indexes), ``skip`` (counted and
    dropped), ``error`` (raise).
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty={empty!r}; valid: {EMPTY_POLICIES}")
    stats = stats if stats is not None else CorpusStats()
    seen: set[str] = set()  # ids only (~60 B each); the first location is looked up on error
    for path in paths:
        for lineno, line in iter_lines(path):
            doc = parse_doc(_parse_json(path, lineno, line), path, lineno)
            if check_duplicates:
                if doc.id in seen:
                    first = _first_location(paths, doc.id)
                    raise DataError(f"{path}:{lineno}: field 'id': duplicate document id {doc.id!r} "
                                    f"(first at {first}). Fix: make ids unique.")
                seen.add(doc.id)
            if not doc.title and not doc.text:
                stats.empty += 1
                if empty == "error":
                    raise DataError(f"{path}:{lineno}: fields 'title'/'text': document {doc.id!r} is empty. "
                                    "Fix: remove it, or pass empty='keep' (index it) or empty='skip' (drop it, counted).")
                if empty == "skip":
                    stats.skipped_empty.append(doc.id)
                    continue
            stats.docs += 1
            yield doc
    if stats.empty:
        log.warning("%d empty document(s) (policy: %s)", stats.empty, empty)


def load_queries_file(path: str | Path) -> dict[str, str]:
    """``{qid: text}`` from a BEIR/Pyserini JSONL queries file or a TSV topics file (``qid<TAB>text``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: queries file not found.")
    queries: dict[str, str] = {}
    is_json = ".jsonl" in path.suffixes or ".json" in path.suffixes
    for lineno, line in iter_lines(path):
        if is_json:
            obj = _parse_json(path, lineno, line)
            qid = _field(obj, path, lineno, ("_id", "id", "qid", "query_id"), "query id")
            text = _field(obj, path, lineno, ("text", "contents", "title", "query"), "query text")
        else:
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError(f"{path}:{lineno}: expected 'qid<TAB>text', found no tab. "
                                "Fix: separate the id and the text with a tab.")
            qid, text = parts[0], " ".join(parts[1:])
        qid, text = qid.strip(), text.strip()
        if qid in queries:
            raise DataError(f"{path}:{lineno}: field 'id': duplicate query id {qid!r}. Fix: make query ids unique.")
        if not qid:
            raise DataError(f"{path}:{lineno}: field 'id': empty query id. Fix: give every query an id.")
        if not text:
            raise DataError(f"{path}:{lineno}: field 'text': query {qid!r} has empty text. Fix: remove the query "
                            "or give it text.")
        queries[qid] = text
    return queries


def load_qrels_file(path: str | Path) -> dict[str, dict[str, int]]:
    """``{qid: {docid: relevance}}`` from a BEIR qrels TSV (with header) or a TREC qrels file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: qrels file not found.")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if lineno == 1 and parts[:2] == ["query-id", "corpus-id"]:
            continue
        if len(parts) == 3:
            qid, docid, rel = parts
        elif len(parts) == 4:
            qid, _, docid, rel = parts
        else:
            raise DataError(f"{path}:{lineno}: expected 'qid docid rel' (BEIR, tab-separated) or 'qid 0 docid rel' "
                            f"(TREC), found {len(parts)} field(s): {line[:80]!r}. Fix: one judgement per line.")
        try:
            grade = float(rel)
            if not grade.is_integer():
                raise ValueError(rel)
        except ValueError:
            raise DataError(f"{path}:{lineno}: field 'relevance' (last column): {rel!r} is not an integer. "
                            "Fix: relevance grades are integers (0, 1, 2, ...).") from None
        qrels.setdefault(qid, {})[docid] = int(grade)
    return qrels


# Public helpers that accept names as well as paths live in resolve.py; these re-exports keep
# `from dupmae_ir.data import iter_corpus, load_queries, load_qrels` the single front door.
def iter_corpus(name, empty: str = "keep", stats: CorpusStats | None = None) -> Iterator[Doc]:
    """Stream the documents of a collection name or path (see :func:`dupmae_ir.data.resolve`)."""
    from .resolve import resolve

    return resolve(name).iter_docs(empty=empty, stats=stats)


def load_queries(name, split: str | None = None) -> dict[str, str]:
    """``{qid: text}`` of a collection name (with split) or of a queries/topics file."""
    from .resolve import resolve

    return resolve(name).queries(split)


def load_qrels(name, split: str | None = None) -> dict[str, dict[str, int]]:
    """``{qid: {docid: rel}}`` of a collection name (with split) or of a qrels file."""
    from .resolve import resolve

    return resolve(name).qrels(split)
