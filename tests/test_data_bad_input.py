"""Bad input: each case gets an error (or the documented, counted skip) naming file, line and field."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from dupmae_ir.data import CorpusStats, DataError, resolve
from dupmae_ir.data.readers import load_qrels_file, load_queries_file

GOOD = [{"_id": "d1", "title": "T1", "text": "first"}, {"_id": "d2", "title": "", "text": "second"}]


def write_corpus(folder: Path, lines: list, name: str = "corpus.jsonl") -> Path:
    """A BEIR folder whose corpus holds ``lines`` (dicts are JSON-encoded, str/bytes written raw)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        raw += (line.encode("utf-8") if isinstance(line, str) else line) + b"\n"
    path = folder / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def read_all(folder: Path, **kwargs):
    return list(resolve(folder).iter_docs(**kwargs))


def assert_names(err: pytest.ExceptionInfo, path: Path, line: int, *words: str) -> None:
    msg = str(err.value)
    assert f"{path}:{line}:" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    assert "Fix" in msg or "fix" in msg, msg


def test_malformed_json_line(tmp_path):
    path = write_corpus(tmp_path / "c", [GOOD[0], '{"_id": "d2", "text": "unterminated'])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert_names(err, path, 2, "malformed JSON", "column")


def test_malformed_json_in_gzip_corpus(tmp_path):
    path = write_corpus(tmp_path / "c", [GOOD[0], GOOD[1], "not json"], name="corpus.jsonl.gz")
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert_names(err, path, 3, "malformed JSON")


def test_json_line_not_an_object(tmp_path):
    path = write_corpus(tmp_path / "c", ['["d1", "text"]'])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert_names(err, path, 1, "JSON object")


def test_missing_id(tmp_path):
    path = write_corpus(tmp_path / "c", [GOOD[0], {"title": "T", "text": "no id"}])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert_names(err, path, 2, "missing id field", "'_id'", "Fields present: ['text', 'title']")


def test_missing_text_field(tmp_path):
    path = write_corpus(tmp_path / "c", [GOOD[0], {"_id": "d2", "title": "a title, no text"}])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert_names(err, path, 2, "missing text field", "'text'")
    # a Pyserini line without 'contents'
    path = write_corpus(tmp_path / "p", [{"id": "d1", "body": "x"}], name="docs.jsonl")
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "p")
    assert_names(err, path, 1, "missing text field", "'contents'")


def test_wrong_field_type(tmp_path):
    path = write_corpus(tmp_path / "c", [{"_id": "d1", "title": "", "text": ["a", "list"]}])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert_names(err, path, 1, "field 'text'", "must be a string")


def test_bad_ids(tmp_path):
    path = write_corpus(tmp_path / "c", [{"_id": "", "text": "x"}])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert_names(err, path, 1, "field 'id'", "empty document id")
    path = write_corpus(tmp_path / "w", [{"_id": "a b", "text": "x"}])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "w")
    assert_names(err, path, 1, "field 'id'", "whitespace")


def test_duplicate_doc_id(tmp_path):
    path = write_corpus(tmp_path / "c", [GOOD[0], GOOD[1], {"_id": "d1", "title": "", "text": "again"}])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert_names(err, path, 3, "field 'id'", "duplicate document id 'd1'", f"first at {path}:1")
    assert len(read_all(tmp_path / "c", check_duplicates=False)) == 3  # the check can be turned off


def test_duplicate_doc_id_across_files(tmp_path):
    folder = tmp_path / "coll"
    first = write_corpus(folder, [{"id": "x1", "contents": "a"}], name="a.jsonl")
    second = write_corpus(folder, [{"id": "x2", "contents": "b"}, {"id": "x1", "contents": "c"}], name="b.jsonl")
    with pytest.raises(DataError) as err:
        read_all(folder)
    assert_names(err, second, 2, "duplicate document id 'x1'", f"first at {first}:1")


def test_non_utf8_byte(tmp_path):
    path = write_corpus(tmp_path / "c", [GOOD[0], b'{"_id": "d2", "text": "caf\xe9"}'])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert_names(err, path, 2, "byte 0xe9", "column 27", "in field 'text'", "not UTF-8", "iconv")


def test_empty_document_policy(tmp_path):
    """Documented policy: keep (default, counted), skip (counted, ids listed), error (names file/line)."""
    lines = [GOOD[0], {"_id": "e1", "title": "", "text": "   "}, GOOD[1], {"_id": "e2", "title": None, "text": ""}]
    path = write_corpus(tmp_path / "c", lines)
    stats = CorpusStats()
    kept = read_all(tmp_path / "c", stats=stats)
    assert [d.id for d in kept] == ["d1", "e1", "d2", "e2"] and (stats.docs, stats.empty) == (4, 2)
    stats = CorpusStats()
    skipped = read_all(tmp_path / "c", empty="skip", stats=stats)
    assert [d.id for d in skipped] == ["d1", "d2"]
    assert (stats.docs, stats.empty, stats.skipped_empty) == (2, 2, ["e1", "e2"])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c", empty="error")
    assert_names(err, path, 2, "'title'/'text'", "'e1' is empty", "empty='skip'")


def test_blank_lines_crlf_and_bom_are_tolerated(tmp_path):
    path = tmp_path / "c" / "corpus.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD[0]).encode() + b"\r\n\r\n" + json.dumps(GOOD[1]).encode()
                     + b"\r\n")
    assert [d.id for d in read_all(tmp_path / "c")] == ["d1", "d2"]


def test_bad_qrels_lines(tmp_path):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n")
    with pytest.raises(DataError) as err:
        load_qrels_file(path)
    assert_names(err, path, 3, "found 2 field(s)", "'qid docid rel'")
    path.write_text("q1 0 d1 1\nq1 0 d2 high\n")
    with pytest.raises(DataError) as err:
        load_qrels_file(path)
    assert_names(err, path, 2, "field 'relevance'", "'high'")
    path.write_text("q1 0 d1 0.5\n")
    with pytest.raises(DataError) as err:
        load_qrels_file(path)
    assert_names(err, path, 1, "field 'relevance'", "not an integer")
    # the same through a BEIR folder
    (tmp_path / "b" / "qrels").mkdir(parents=True)
    bad = tmp_path / "b" / "qrels" / "test.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\r\nq1\td1\t1\tx\ty\r\n")
    with pytest.raises(DataError) as err:
        resolve(tmp_path / "b").qrels("test")
    assert_names(err, bad, 2, "found 5 field(s)")


def test_tsv_topic_without_tab(tmp_path):
    path = tmp_path / "topics.tsv"
    path.write_text("1\tfirst query\n2 second query with spaces only\n")
    with pytest.raises(DataError) as err:
        resolve(path).queries()
    assert_names(err, path, 2, "'qid<TAB>text'", "no tab")


def test_bad_query_lines(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n')
    with pytest.raises(DataError) as err:
        load_queries_file(path)
    assert_names(err, path, 2, "field 'id'", "duplicate query id '1'")
    path.write_text('{"_id": "1", "text": ""}\n')
    with pytest.raises(DataError) as err:
        load_queries_file(path)
    assert_names(err, path, 1, "field 'text'", "empty text")
    path.write_text('{"text": "no id"}\n')
    with pytest.raises(DataError) as err:
        load_queries_file(path)
    assert_names(err, path, 1, "missing query id field")


def test_error_messages_are_single_sentences_with_location(tmp_path):
    """Every DataError starts with 'file:line:' so editors and terminals can jump to it."""
    path = write_corpus(tmp_path / "c", ["{broken"])
    with pytest.raises(DataError) as err:
        read_all(tmp_path / "c")
    assert re.match(rf"^{re.escape(str(path))}:1: ", str(err.value))
