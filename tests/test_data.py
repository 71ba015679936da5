"""Data layer on the real collections in ../shared/data: counts, splits, the bundled default, Pyserini
JSONL collections and TSV topics, name resolution and streaming."""
from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from dupmae_ir.data import (
    Collection,
    CorpusStats,
    DataError,
    Doc,
    doc_text,
    iter_corpus,
    load_qrels,
    load_queries,
    resolve,
)

ROOT = Path(__file__).resolve().parent.parent


def n_judgements(qrels: dict[str, dict[str, int]]) -> int:
    return sum(len(v) for v in qrels.values())


# --- SciFact (the only shared collection with documents) ---------------------------------------
def test_scifact_counts(scifact_dir):
    coll = resolve(scifact_dir)
    assert coll.kind == "beir" and coll.has_corpus()
    assert coll.default_split == "test" and coll.splits() == ["test", "train"]
    stats = CorpusStats()
    ids = [d.id for d in coll.iter_docs(stats=stats)]
    assert len(ids) == 5183 == len(set(ids)) == stats.docs
    assert stats.empty == 0
    assert (ids[0], ids[-1]) == ("4983", "198309074")  # MANIFEST's first and last ids
    assert len(coll.queries("test")) == 300 and len(coll.queries()) == 300  # default split = test
    assert n_judgements(coll.qrels("test")) == 339 and len(coll.qrels()) == 300
    assert len(coll.queries("train")) == 809
    assert n_judgements(coll.qrels("train")) == 919


def test_scifact_docs_keep_title_and_text_apart(scifact_dir):
    doc = next(iter(resolve(scifact_dir).iter_docs()))
    assert isinstance(doc, Doc)
    assert doc.title.startswith("Microstructural development of human newborn cerebral white matter")
    assert doc.text.startswith("Alterations of the architecture of cerebral white matter")
    assert doc_text(doc) == f"{doc.title} {doc.text}"
    assert doc_text(Doc("x", "", "only text")) == "only text"
    assert doc_text(Doc("x", "only title", "")) == "only title"


def _digest(coll: Collection) -> str:
    h = hashlib.sha256()
    for d in coll.iter_docs():
        h.update(json.dumps([d.id, d.title, d.text]).encode())
    return h.hexdigest()


def test_bundled_default_equals_shared_scifact(scifact_dir):
    default, shared = resolve("default"), resolve(scifact_dir)
    assert default.kind == "beir" and default.path.is_dir()
    assert (default.path / "LICENSE.md").is_file() and (default.path / "MANIFEST.md").is_file()
    assert _digest(default) == _digest(shared)
    for split in ("test", "train"):
        assert default.queries(split) == shared.queries(split)
        assert default.qrels(split) == shared.qrels(split)
    # the module-level helpers take the same names
    assert load_queries("default") == shared.queries("test")
    assert load_qrels("default", "train") == shared.qrels("train")
    assert sum(1 for _ in iter_corpus("default")) == 5183


def test_data_dir_serves_short_and_beir_names(shared_data):
    for name in ("scifact", "beir/scifact"):
        coll = resolve(name, data_dir=shared_data / "beir")
        assert coll.kind == "beir" and coll.path == shared_data / "beir" / "scifact"
        assert len(coll.queries()) == 300


# --- MS MARCO passage topics and qrels (folder layout queries.<split>.jsonl + qrels/<split>.tsv) --
@pytest.mark.parametrize("split,n_queries,n_judged_queries,n_qrels", [
    ("dev-small", 6980, 6980, 7437),
    ("dl19", 43, 43, 9260),
    ("dl20", 200, 54, 11386),  # 200 topics, 54 judged
])
def test_msmarco_folder(shared_data, split, n_queries, n_judged_queries, n_qrels):
    coll = resolve(shared_data / "msmarco-passage")
    assert coll.kind == "beir" and not coll.has_corpus()
    assert coll.splits() == ["dev-small", "dl19", "dl20"] and coll.default_split == "dev-small"
    queries, qrels = coll.queries(split), coll.qrels(split)
    assert len(queries) == n_queries and len(qrels) == n_judged_queries
    assert n_judgements(qrels) == n_qrels
    assert set(qrels) <= set(queries)
    if split == "dl19":
        assert queries["156493"] == "do goldfish grow"
        assert {g for v in qrels.values() for g in v.values()} == {0, 1, 2, 3}
    # a per-split file on its own is a topics file; a qrels file on its own is a qrels file
    assert load_queries(shared_data / "msmarco-passage" / f"queries.{split}.jsonl") == queries
    assert load_qrels(shared_data / "msmarco-passage" / "qrels" / f"{split}.tsv") == qrels


def test_msmarco_folder_errors(shared_data):
    coll = resolve(shared_data / "msmarco-passage")
    with pytest.raises(DataError, match=r"no documents"):
        next(coll.iter_docs())
    with pytest.raises(DataError, match=r"dev-small"):
        coll.queries("nosuchsplit")


# --- the other BEIR sets: queries and qrels only ------------------------------------------------
@pytest.mark.parametrize("name,n_queries,n_qrels", [
    ("nfcorpus", 323, 12334),
    ("scidocs", 1000, 29928),
    ("fiqa", 648, 1706),
    ("quora", 10000, 15675),
    ("trec-covid", 50, 66334),
])
def test_beir_topics_and_qrels(shared_data, name, n_queries, n_qrels):
    coll = resolve(name, data_dir=shared_data / "beir")
    assert coll.kind == "beir" and coll.splits() == ["test"] and not coll.has_corpus()
    queries, qrels = coll.queries(), coll.qrels()
    assert len(queries) == n_queries and len(qrels) == n_queries
    assert n_judgements(qrels) == n_qrels
    assert all(isinstance(g, int) for v in qrels.values() for g in v.values())


# --- Pyserini JSONL collections and TSV topics -------------------------------------------------
def _write_pyserini_slice(scifact_dir: Path, folder: Path, n: int = 40) -> list[Doc]:
    """The first n SciFact docs as a Pyserini JSONL collection split over a .jsonl and a .jsonl.gz."""
    docs = [d for _, d in zip(range(n), resolve(scifact_dir).iter_docs())]
    folder.mkdir(parents=True, exist_ok=True)
    half = n // 2
    with open(folder / "part0.jsonl", "w", encoding="utf-8") as f:
        for d in docs[:half]:
            f.write(json.dumps({"id": d.id, "contents": doc_text(d)}) + "\n")
    with gzip.open(folder / "part1.jsonl.gz", "wt", encoding="utf-8") as f:
        for d in docs[half:]:
            f.write(json.dumps({"id": d.id, "contents": doc_text(d)}) + "\n")
    return docs


def test_pyserini_jsonl_collection(scifact_dir, tmp_path):
    docs = _write_pyserini_slice(scifact_dir, tmp_path / "coll")
    coll = resolve(tmp_path / "coll")
    assert coll.kind == "jsonl" and coll.has_corpus()
    got = list(coll.iter_docs())
    assert [d.id for d in got] == [d.id for d in docs]
    assert all(g.title == "" and g.text == doc_text(d) for g, d in zip(got, docs))
    single = list(resolve(tmp_path / "coll" / "part0.jsonl").iter_docs())  # one file works too
    assert len(single) == 20
    with pytest.raises(DataError, match="holds no queries"):
        coll.queries()


def test_tsv_topics_and_trec_qrels(scifact_dir, tmp_path):
    coll = resolve(scifact_dir)
    queries, qrels = coll.queries("test"), coll.qrels("test")
    topics = tmp_path / "topics.scifact.test.tsv"
    topics.write_text("".join(f"{qid}\t{text}\n" for qid, text in queries.items()), encoding="utf-8")
    trec = tmp_path / "qrels.scifact.test.txt"
    trec.write_text("".join(f"{q} 0 {d} {r}\n" for q, v in qrels.items() for d, r in v.items()))
    tcoll = resolve(topics)
    assert tcoll.kind == "topics"
    assert tcoll.queries() == queries
    assert load_qrels(trec) == qrels
    with pytest.raises(DataError, match="holds no qrels"):
        tcoll.qrels()


# --- streaming ---------------------------------------------------------------------------------
def test_corpus_streams(scifact_dir):
    coll = resolve(scifact_dir)
    it = coll.iter_docs()
    assert inspect.isgenerator(it)
    assert isinstance(next(it), Doc)
    it.close()
    # Peak Python allocation while streaming all 5,183 docs (7.8 M characters) stays a small fraction
    # of the text: without the duplicate check it is one document's worth; the check adds the id set.
    for check, bound in ((False, 0.02), (True, 0.25)):
        tracemalloc.start()
        chars = 0
        for d in coll.iter_docs(check_duplicates=check):
            chars += len(d.title) + len(d.text)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert chars > 7_000_000
        assert peak < bound * chars, (check, peak, chars)


# --- names -------------------------------------------------------------------------------------
_OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
            "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
            "IR_DATASETS_DL_TRIES": "1"}


def test_unknown_name_fails_at_once_with_close_matches(tmp_path):
    """Run with every proxy pointing at a closed port: a network access would fail loudly."""
    code = (
        "from dupmae_ir.data import resolve, DataError\n"
        "for name in ('beir/scfact', 'msmarco-pasage', 'scifcat'):\n"
        "    try:\n"
        "        resolve(name)\n"
        "    except DataError as e:\n"
        "        print(e)\n"
        "    else:\n"
        "        raise SystemExit(name + ' resolved')\n"
    )
    env = {**os.environ, **_OFFLINE, "IR_DATASETS_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "Close matches" in lines[0] and "'beir/scifact'" in lines[0]
    assert "'msmarco-passage'" in lines[1]
    assert "scifact" in lines[2]
    assert "Download failed" not in out.stderr
    assert not [p for p in tmp_path.rglob('*') if p.is_file()]  # nothing downloaded or cached


def test_path_and_local_only_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        resolve(str(tmp_path / "missing" / "corpus"))
    with pytest.raises(DataError, match="data_dir"):
        resolve("beir/bioasq")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a BEIR folder"):
        resolve(tmp_path / "empty")
    with pytest.raises(ValueError, match="empty="):
        resolve("default").iter_docs(empty="drop")


def test_ir_datasets_ids_resolve_without_loading():
    for name, split in (("msmarco-passage", "dev"), ("msmarco-passage/trec-dl-2019/judged", "dev"),
                        ("beir/scifact", "test"), ("beir/cqadupstack/android", "test"), ("beir/nq", "test")):
        coll = resolve(name)
        assert coll.kind == "ir_datasets" and coll.ir_id == name and coll.default_split == split
