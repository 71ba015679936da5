"""Streaming readers for local files, with errors that name file, line and field.

Formats: BEIR ``corpus.jsonl[.gz]`` (``_id``, ``title``, ``text``), Pyserini JSONL collections
(``id``, ``contents``), BEIR ``queries.jsonl`` (``_id``, ``text``), TSV topics (``qid<TAB>text``),
BEIR qrels TSV (``query-id<TAB>corpus-id<TAB>score``, header and CRLF tolerated) and TREC qrels
(``qid 0 docid rel``, any whitespace).

One id rule for documents, queries and qrels from every source (:func:`check_id`): an id is used
verbatim and must be non-empty and free of whitespace, since TREC run and qrels files separate their
columns with whitespace; a document id must also fit Lucene's term limit (32,766 UTF-8 bytes).

Input size is bounded: a line longer than ``max_line_bytes`` (after decompression; default
:data:`MAX_LINE_BYTES`, 1 MiB) is an error naming file and line, found before the line is held whole.
"""
from __future__ import annotations

import gzip
import json
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .types import DataError, Doc

log = logging.getLogger(__name__)

EMPTY_POLICIES = ("keep", "skip", "error")
MAX_LINE_BYTES = 1 << 20  # one document (a JSONL line) of up to 1 MiB; raise with encode --max-doc-bytes
LUCENE_MAX_TERM_BYTES = 32766  # Lucene refuses a longer term ("immense term"), and a document id is one


@dataclass
class CorpusStats:
    """Counts gathered while streaming a corpus (read them after the iterator is exhausted)."""

    docs: int = 0
    empty: int = 0
    skipped_empty: list[str] = field(default_factory=list)


def check_id(value: str, where: str, what: str = "document id", field_name: str = "id") -> str:
    """``value`` if it is a usable id, else a :class:`DataError` at ``where`` (``file:line`` or a
    dataset and record number)."""
    if not value:
        raise DataError(where, f"field '{field_name}': empty {what}", f"give every {what.split()[0]} a non-empty id")
    if what == "document id" and len(value) * 4 > LUCENE_MAX_TERM_BYTES:  # 4: the most bytes a character takes
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > LUCENE_MAX_TERM_BYTES:
            raise DataError(where, f"field '{field_name}': {what} of {size} bytes ({value[:40]!r}...) exceeds "
                                   f"Lucene's term limit of {LUCENE_MAX_TERM_BYTES} bytes",
                            "shorten the id (a hash of it, for example)")
    if any(ch.isspace() for ch in value):
        raise DataError(where, f"field '{field_name}': {what} {value!r} contains whitespace, which TREC run and "
                               "qrels files cannot hold", "remove or replace the whitespace in the ids (e.g. with '_')")
    return value


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


def _capped_lines(fh, path: Path, limit: int) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a binary file; a line over ``limit`` bytes is a :class:`DataError`
    raised after reading at most ``limit + 1`` of its bytes."""
    lineno = 0
    while raw := fh.readline(limit + 1):
        lineno += 1
        if len(raw) > limit and len(raw.rstrip(b"\r\n")) > limit:
            raise DataError(f"{path}:{lineno}", f"line longer than {limit} bytes (the cap on one document or "
                                                "query, after decompression)",
                            "raise the cap (`dupmae_ir.encode --max-doc-bytes N`), or split the document")
        yield lineno, raw


def iter_lines(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line; line numbers start at 1.

    Decodes strictly as UTF-8; a bad byte raises :class:`DataError` naming file, line and column, and
    so does a truncated or corrupt ``.gz`` file or a line over ``max_line_bytes`` bytes. Trailing
    ``\\r\\n``/``\\n`` are removed.
    """
    path = Path(path)
    lineno = 0
    try:
        with _open_binary(path) as fh:
            for lineno, raw in _capped_lines(fh, path, max_line_bytes):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}", f"byte 0x{raw[e.start]:02x} at column {e.start + 1}"
                                                        f"{_field_of_bad_byte(raw)} is not UTF-8",
                                    "re-encode the file as UTF-8, for example `iconv -f latin1 -t utf-8`") from None
                line = line.rstrip("\r\n")
                if lineno == 1:
                    line = line.lstrip("\ufeff")  # a UTF-8 byte-order mark is not data
                if line.strip():
                    yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(path, f"the gzip data is truncated or corrupt after line {lineno} ({e})",
                        f"re-create or re-download the file (`gzip -t {path.name}` checks it)") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, expected a file", "pass the file inside it") from None


def _parse_json(path: Path, lineno: int, line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}", f"malformed JSON ({e.msg} at column {e.colno})",
                        "each line must be one JSON object") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}", f"expected a JSON object, got {type(obj).__name__}",
                        'each line must be one JSON object such as {"id": ..., "contents": ...}')
    return obj


def _field(obj: dict, path: Path, lineno: int, names: tuple[str, ...], what: str) -> str:
    for name in names:
        if name in obj:
            value = obj[name]
            if value is None:
                value = ""
            if not isinstance(value, (str, int)):
                raise DataError(f"{path}:{lineno}", f"field '{name}' must be a string, got {type(value).__name__}",
                                "write it as a JSON string")
            return str(value)
    raise DataError(f"{path}:{lineno}", f"missing {what} field (expected one of {', '.join(repr(n) for n in names)}); "
                                        f"Fields present: {sorted(obj)}", "add the field to every line")


def parse_doc(obj: dict, path: Path, lineno: int) -> Doc:
    """A BEIR (``_id``/``title``/``text``) or Pyserini (``id``/``contents``) corpus line as a :class:`Doc`."""
    doc_id = check_id(_field(obj, path, lineno, ("_id", "id", "docid"), "id"), f"{path}:{lineno}")
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


def check_empty_policy(empty: str) -> None:
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty={empty!r}; valid: {EMPTY_POLICIES}")


def keep_document(doc: Doc, empty: str, stats: CorpusStats, where: str) -> bool:
    """The one empty-document policy (a document whose title and text are both empty), for every
    reader: ``keep`` (yielded and counted in ``stats.empty``), ``skip`` (counted, id kept in
    ``stats.skipped_empty``, not yielded: returns False) or ``error`` (a :class:`DataError` at ``where``)."""
    if doc.title or doc.text:
        return True
    stats.empty += 1
    if empty == "error":
        raise DataError(where, f"fields 'title'/'text': document {doc.id!r} is empty",
                        "remove it, or pass empty='keep' (index it) or empty='skip' (drop it, counted)")
    if empty == "skip":
        stats.skipped_empty.append(doc.id)
        return False
    return True


def iter_jsonl_corpus(paths: list[Path], empty: str = "keep", stats: CorpusStats | None = None,
                      check_duplicates: bool = True, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Doc]:
    """Stream documents from JSONL files, one line at a time.

    Memory holds only the set of ids seen so far, for the duplicate-id check (about 60 bytes per
    document); ``check_duplicates=False`` streams in constant memory.

    ``empty`` decides what happens to a document whose title and text are both empty: ``keep`` (it is
    yielded and counted; the default, so that every id reaches the indexes), ``skip`` (counted and
    dropped), ``error`` (raise). ``max_line_bytes``: the longest line read (see the module doc).
    """
    check_empty_policy(empty)
    stats = stats if stats is not None else CorpusStats()
    seen: set[str] = set()  # ids only (~60 B each); the first location is looked up on error
    for path in paths:
        for lineno, line in iter_lines(path, max_line_bytes):
            doc = parse_doc(_parse_json(path, lineno, line), path, lineno)
            if check_duplicates:
                if doc.id in seen:
                    raise DataError(f"{path}:{lineno}", f"field 'id': duplicate document id {doc.id!r} "
                                                        f"(first at {_first_location(paths, doc.id)})",
                                    "make ids unique")
                seen.add(doc.id)
            if not keep_document(doc, empty, stats, f"{path}:{lineno}"):
                continue
            stats.docs += 1
            yield doc
    if stats.empty:
        log.warning("%d empty document(s) (policy: %s)", stats.empty, empty)


def load_queries_file(path: str | Path) -> dict[str, str]:
    """``{qid: text}`` from a BEIR/Pyserini JSONL queries file or a TSV topics file (``qid<TAB>text``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "queries file not found", "check the path")
    queries: dict[str, str] = {}
    is_json = ".jsonl" in path.suffixes or ".json" in path.suffixes
    for lineno, line in iter_lines(path):
        where = f"{path}:{lineno}"
        if is_json:
            obj = _parse_json(path, lineno, line)
            qid = _field(obj, path, lineno, ("_id", "id", "qid", "query_id"), "query id")
            text = _field(obj, path, lineno, ("text", "contents", "title", "query"), "query text")
        else:
            qid, tab, text = line.partition("\t")
            if not tab:
                raise DataError(where, "expected 'qid<TAB>text', found no tab",
                                "separate the id and the text with a tab")
        check_id(qid, where, "query id")
        text = text.strip()
        if qid in queries:
            raise DataError(where, f"field 'id': duplicate query id {qid!r}", "make query ids unique")
        if not text:
            raise DataError(where, f"field 'text': query {qid!r} has empty text", "remove the query or give it text")
        queries[qid] = text
    return queries


def load_qrels_file(path: str | Path) -> dict[str, dict[str, int]]:
    """``{qid: {docid: relevance}}`` from a BEIR qrels TSV (tab-separated ``qid docid rel``, optional
    ``query-id corpus-id score`` header) or a TREC qrels file (``qid 0 docid rel``). A line holding a
    tab is split on tabs, any other on whitespace; a wrong number of fields is an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "qrels file not found", "check the path")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        where = f"{path}:{lineno}"
        parts = line.split("\t") if "\t" in line else line.split()
        if lineno == 1 and [p.strip() for p in parts[:2]] == ["query-id", "corpus-id"]:
            continue
        if len(parts) == 3:
            qid, docid, rel = parts
        elif len(parts) == 4:
            qid, _, docid, rel = parts
        else:
            raise DataError(where, f"expected 'qid docid rel' (BEIR, tab-separated) or 'qid 0 docid rel' (TREC), "
                                   f"found {len(parts)} field(s): {line[:80]!r}", "one judgement per line")
        check_id(qid, where, "query id", "query-id")
        check_id(docid, where, "document id", "corpus-id")
        try:
            grade = float(rel)
            if not grade.is_integer():
                raise ValueError(rel)
        except ValueError:
            raise DataError(where, f"field 'relevance' (last column): {rel!r} is not an integer",
                            "relevance grades are integers (0, 1, 2, ...)") from None
        qrels.setdefault(qid, {})[docid] = int(grade)
    return qrels
