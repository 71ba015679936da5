"""Every reuse checks what it depends on (issue 32, item 2): an eval cache, a resumed encode and
pre-encoded queries are used only when the checkpoint (its weights and config, by content) and the
corpus (by content) are the ones that made them; else they are refused with one line, or rebuilt.
Real components throughout: two tiny random BERTs saved under the same folder name, a 30-document
SciFact slice, FAISS and Anserini.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import build_tiny_checkpoint, write_beir_slice

SLICE = 30


def _collection(scifact_dir: Path, folder: Path, n: int = SLICE) -> Path:
    """A BEIR folder: the first ``n`` SciFact documents, 8 test queries and their qrels."""
    return write_beir_slice(scifact_dir, folder, n, 8)


@pytest.fixture(scope="module")
def two_finals(tmp_path_factory) -> tuple[Path, Path]:
    """Two different checkpoints that share a folder name, as ``A/final`` and ``B/final`` do."""
    root = tmp_path_factory.mktemp("finals")
    return build_tiny_checkpoint(root / "A" / "final", seed=0), build_tiny_checkpoint(root / "B" / "final", seed=1)


@pytest.fixture(scope="module")
def coll(scifact_dir, tmp_path_factory) -> Path:
    return _collection(scifact_dir, tmp_path_factory.mktemp("reuse") / "scifact")


def _run_text(result: dict, system: str) -> str:
    return Path(result["runs"][system]).read_text()


def test_d4_eval_keys_indexes_and_results_by_fingerprint_not_basename(coll, two_finals, tmp_path):
    """Evaluating B/final after A/final (same --index-root, --runs, --output) reports B's own runs from an
    index B built, with and without --force-search; a corpus regenerated under the same name is refused."""
    from dupmae_ir.errors import UserError
    from dupmae_ir.eval import EvalSettings, Evaluator
    from dupmae_ir.eval.suites import beir_units
    from dupmae_ir.index import load_index

    a, b = two_finals

    def evaluate(ckpt: Path, force: bool = False) -> dict:
        settings = EvalSettings(encoder=str(ckpt), output=str(tmp_path / "eval"), index_root=str(tmp_path / "idx"),
                                runs=str(tmp_path / "runs"), data_dir=str(coll.parent), modes=("dense",),
                                bm25=False, force_search=force, hits=10, threads=1)
        [res] = Evaluator("beir", settings).run(beir_units(["scifact"], ("nDCG@10",)))
        assert res["status"] == "ok", res
        return res

    first = evaluate(a)
    run_a = _run_text(first, "dense")
    assert load_index(first["index"], check=False).encoder == str(a.resolve())
    for force in (False, True):
        res = evaluate(b, force)
        assert load_index(res["index"], check=False).encoder == str(b.resolve()), force  # B's own index
        assert _run_text(res, "dense") != run_a, force  # B's hits, not A's
        assert not res.get("reused"), force
    assert evaluate(b).get("reused")  # the same checkpoint and corpus: the result file is reused
    assert _run_text(evaluate(a), "dense") == run_a  # A's folders were left alone
    corpus = coll / "corpus.jsonl"
    saved = corpus.read_text()
    try:
        corpus.write_text(saved.replace('"text": "', '"text": "regenerated '))  # same name, other content
        with pytest.raises(UserError, match="corpus changed"):
            evaluate(a)
    finally:
        corpus.write_text(saved)


def _fail_midway(folder: Path, ckpt: Path, out: Path, bad_line: int = 25):
    """Run an encode that reads a malformed line after some chunks are finished; return the work folder."""
    from dupmae_ir.data import DataError
    from dupmae_ir.encode import encode_corpus

    lines = (folder / "corpus.jsonl").read_text().splitlines(keepends=True)
    good = "".join(lines)
    (folder / "corpus.jsonl").write_text("".join(lines[:bad_line - 1]) + "{broken\n" + "".join(lines[bad_line:]))
    with pytest.raises(DataError, match="malformed"):
        encode_corpus(folder, out, encoder=str(ckpt), dtype="fp32", batch_size=8, chunk_size=8, progress=False,
                      impact=False)  # dense only: no Anserini build to wait for
    (folder / "corpus.jsonl").write_text(good)
    work = out.with_name(f".{out.name}.partial")
    assert len(list((work / "chunks").glob("*.done"))) >= 2  # an interrupted encode to resume
    return work


def test_d5_resume_refuses_a_regenerated_corpus_or_a_replaced_checkpoint(scifact_dir, tmp_path):
    from dupmae_ir.encode import encode_corpus
    from dupmae_ir.errors import UserError

    folder = _collection(scifact_dir, tmp_path / "c")
    ckpt = build_tiny_checkpoint(tmp_path / "m" / "final", seed=0)
    args = dict(encoder=str(ckpt), dtype="fp32", batch_size=8, chunk_size=8, progress=False, impact=False)

    # the corpus regenerated at the same path (every document's text changed, same ids)
    out = tmp_path / "idx"
    _fail_midway(folder, ckpt, out)
    corpus = folder / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace('"text": "', '"text": "regenerated '))
    with pytest.raises(UserError, match=r"cannot be resumed: the corpus changed \(documents"):
        encode_corpus(folder, out, **args)
    assert not out.exists()
    encode_corpus(folder, out, overwrite=True, **args)  # --overwrite starts afresh
    meta = json.loads((out / "dupmae_index.json").read_text())
    assert meta["resumed_chunks"] == 0 and meta["docs"] == SLICE
    assert meta["inputs"]["corpus"]["files"]["corpus.jsonl"]["bytes"] == corpus.stat().st_size

    # the checkpoint replaced at the same path by another model of the same architecture
    out = tmp_path / "idx2"
    _fail_midway(folder, ckpt, out)
    shutil.rmtree(ckpt)
    build_tiny_checkpoint(ckpt, seed=1)
    with pytest.raises(UserError, match=r"the checkpoint changed \(model.safetensors: same size, other content\)"):
        encode_corpus(folder, out, **args)
    assert not out.exists()

    # nothing changed: the resume goes ahead
    out = tmp_path / "idx3"
    _fail_midway(folder, ckpt, out)
    encode_corpus(folder, out, **args)
    assert json.loads((out / "dupmae_index.json").read_text())["resumed_chunks"] >= 2


def test_d12_encoded_queries_of_another_checkpoint_are_refused_unless_asked(coll, two_finals, tmp_path):
    """Queries pre-encoded by B are refused on A's index (one line naming both); with
    --allow-other-encoder the run's provenance names B, the queries' encoder, not A."""
    from dupmae_ir.data import resolve
    from dupmae_ir.encode import encode_corpus, encode_queries
    from dupmae_ir.errors import UserError
    from dupmae_ir.search import DupMAESearcher
    from dupmae_ir.search.__main__ import main

    a, b = two_finals
    index = encode_corpus(coll, tmp_path / "idx", encoder=str(a), dtype="fp32", progress=False, impact=False)
    queries = resolve(coll).queries("test")
    mine = encode_queries(queries, str(a), tmp_path / "qa")
    other = encode_queries(queries, str(b), tmp_path / "qb")
    DupMAESearcher(index, encoded_queries=mine)  # the index's own encoder: accepted
    with pytest.raises(UserError, match="not by the index's encoder") as err:
        DupMAESearcher(index, encoded_queries=other)
    assert str(b) in str(err.value) and str(a.resolve()) in str(err.value) and "--allow-other-encoder" in str(err.value)
    run = tmp_path / "run.trec"
    args = ["--index", str(index), "--topics", str(other / "topics.tsv"), "--encoded-queries", str(other),
            "--mode", "dense", "--output", str(run)]
    with pytest.raises(UserError, match="not by the index's encoder"):
        main(args)
    assert not run.exists()
    assert main([*args, "--allow-other-encoder"]) == 0
    prov = json.loads(run.with_name(run.name + ".json").read_text())
    assert prov["encoder"] == str(b) and prov["index_meta"]["encoder"] == str(a.resolve())
