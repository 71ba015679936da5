"""Every FAISS index type of ``encode --faiss``: built by the library's build function, searched, its
top-10 compared with the flat index's, its provenance checked; the search-time knobs (``efSearch``,
``nprobe``) change results; and through the commands, the type and knobs land in the index's and the
run's provenance.

The recall tests use vectors with a cluster structure (a seeded Gaussian mixture): a tiny random
checkpoint's vectors all point the same way (cosine 0.999999 between any two SciFact documents), on
which no approximate index can be judged."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_corpus_slice

DIM, DOCS, QUERIES, K = 64, 2000, 100, 10
# recall@10 of each type against flat, default knobs (measured: 1.0, 0.983, 1.0, 0.983, 0.749, 0.585)
BOUNDS = {"flat": 1.0, "flat-int8": 0.95, "hnsw": 0.95, "hnsw-int8": 0.9, "ivfpq": 0.65, "pq": 0.5}


def _mixture(n: int, seed: int, centres):
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, DIM))  # (n, d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def chunks(tmp_path_factory):
    """The corpus as encode's chunk files (``.npy`` + ``.docid``, 500 documents each) and the queries."""
    centres = np.random.default_rng(0).normal(size=(40, DIM))
    docs, queries = _mixture(DOCS, 1, centres), _mixture(QUERIES, 2, centres)
    folder = tmp_path_factory.mktemp("chunks")
    npy, ids = [], []
    for c, start in enumerate(range(0, DOCS, 500)):
        np.save(folder / f"{c:07d}.npy", docs[start:start + 500])
        (folder / f"{c:07d}.docid").write_text("".join(f"d{i}\n" for i in range(start, start + 500)))
        npy.append(folder / f"{c:07d}.npy")
        ids.append(folder / f"{c:07d}.docid")
    return npy, ids, queries


def _build(chunks, tmp_path, spec):
    import faiss

    from dupmae_ir.dense_index import build_dense_index

    npy, ids, _ = chunks
    info = build_dense_index(npy, ids, tmp_path / spec.kind, spec)
    return faiss.read_index(str(tmp_path / spec.kind / "index")), info


def _top(index, queries):
    return index.search(queries, K)[1]  # (Q, K) rows


def _recall(rows, exact) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, exact)]))


@pytest.fixture(scope="module")
def exact(chunks):
    import faiss

    npy, _, queries = chunks
    flat = faiss.IndexFlatIP(DIM)
    flat.add(np.concatenate([np.load(f) for f in npy]))
    return _top(flat, queries)


@pytest.mark.parametrize("kind", list(BOUNDS))
def test_each_type_keeps_the_flat_top_k_and_records_itself(kind, chunks, exact, tmp_path):
    from dupmae_ir.dense_index import DEFAULT_EF_SEARCH, DenseIndexSpec, apply_search_knobs

    index, info = _build(chunks, tmp_path, DenseIndexSpec(kind))
    applied = apply_search_knobs(index)
    recall = _recall(_top(index, chunks[2]), exact)
    assert recall >= BOUNDS[kind], f"{kind}: recall@{K} {recall:.3f} < {BOUNDS[kind]}"
    assert info["faiss"] == kind and info["docs"] == index.ntotal == DOCS and info["dim"] == DIM
    assert (tmp_path / kind / "docid").read_text().split() == [f"d{i}" for i in range(DOCS)]
    params = info["params"]
    if kind.startswith("hnsw"):
        assert params == {"hnsw_m": 32, "ef_construction": 200, "ef_search": DEFAULT_EF_SEARCH}
        assert index.hnsw.efSearch == DEFAULT_EF_SEARCH  # in the file: stock Pyserini searches with it too
        assert applied == {"faiss": kind, "ef_search": DEFAULT_EF_SEARCH}
    elif kind == "ivfpq":
        assert params == {"pq_m": DIM // 4, "nlist": min(int(4 * DOCS ** 0.5), DOCS // 39), "nprobe": 32}
        assert applied == {"faiss": kind, "nprobe": 32} and info["trained_on"] == DOCS
    elif kind == "pq":
        assert params == {"pq_m": DIM // 4}
    else:
        assert params == {} and applied == {"faiss": kind}
    if kind.endswith("int8"):  # 8-bit codes, trained on the corpus's first vectors
        assert info["trained_on"] == DOCS and info["faiss_class"] in ("IndexScalarQuantizer", "IndexHNSWSQ")
    if kind == "flat-int8":  # a quarter of flat's 4 bytes per dimension
        assert info["bytes"] < 0.3 * DOCS * DIM * 4


def test_knobs_change_results(chunks, exact, tmp_path):
    """efSearch 1 vs 256 on a sparse HNSW graph, nprobe 1 vs every list: recall moves with the knob."""
    from dupmae_ir.dense_index import DenseIndexSpec, apply_search_knobs

    hnsw, _ = _build(chunks, tmp_path, DenseIndexSpec("hnsw", hnsw_m=4, ef_construction=8))
    recall = {}
    for ef in (1, 256):
        assert apply_search_knobs(hnsw, ef_search=ef) == {"faiss": "hnsw", "ef_search": ef}
        recall[ef] = _recall(_top(hnsw, chunks[2]), exact)
    assert recall[1] + 0.3 < recall[256] and recall[256] >= 0.85, recall
    ivf, info = _build(chunks, tmp_path, DenseIndexSpec("ivfpq", nlist=50))
    low = apply_search_knobs(ivf, nprobe=1)
    recall_low = _recall(_top(ivf, chunks[2]), exact)
    assert apply_search_knobs(ivf, nprobe=1000) == {"faiss": "ivfpq", "nprobe": 50}  # capped at nlist
    assert low == {"faiss": "ivfpq", "nprobe": 1}
    assert recall_low + 0.05 < _recall(_top(ivf, chunks[2]), exact), recall_low


def test_bad_parameters_are_one_line_errors(chunks, tmp_path):
    from dupmae_ir.dense_index import DenseIndexSpec, apply_search_knobs
    from dupmae_ir.errors import UserError

    with pytest.raises(UserError, match="valid: flat, flat-int8"):
        DenseIndexSpec("ivf")
    with pytest.raises(UserError, match="--hnsw-m"):
        DenseIndexSpec("hnsw", hnsw_m=1)
    with pytest.raises(UserError, match="--pq-m.*does not divide the dense dimension 64"):
        _build(chunks, tmp_path, DenseIndexSpec("pq", pq_m=7))
    flat, _ = _build(chunks, tmp_path, DenseIndexSpec("flat"))
    with pytest.raises(UserError, match="--ef-search.*HNSW.*'flat'"):
        apply_search_knobs(flat, ef_search=64)
    hnsw, _ = _build(chunks, tmp_path, DenseIndexSpec("hnsw", hnsw_m=8))
    with pytest.raises(UserError, match="--nprobe.*IVF"):
        apply_search_knobs(hnsw, nprobe=4)


def test_commands_record_type_and_knobs(scifact_dir, tiny_checkpoint, tmp_path, capsys):
    """``encode --faiss hnsw --hnsw-m 8 --ef-construction 40`` then ``search --ef-search 7``: the index's
    provenance holds the type and build parameters, the run's the knob in force; ``--nprobe`` on an
    HNSW index is a one-line error."""
    from dupmae_ir.encode.__main__ import main as encode_main
    from dupmae_ir.errors import run_command
    from dupmae_ir.search.__main__ import main as search_main

    corpus = write_corpus_slice(scifact_dir, tmp_path / "corpus.jsonl", 40)
    index = tmp_path / "idx"
    assert run_command(encode_main, ["--corpus", str(corpus), "--encoder", str(tiny_checkpoint), "--output",
                                     str(index), "--dense-only", "--faiss", "hnsw", "--hnsw-m", "8",
                                     "--ef-construction", "40", "--dtype", "fp32", "--no-progress"]) == 0
    dense = json.loads((index / "dupmae_index.json").read_text())["dense"]
    assert dense["faiss"] == "hnsw" and dense["params"] == {"hnsw_m": 8, "ef_construction": 40, "ef_search": 128}
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tcell biology of the immune system\nq2\tvitamin d and bone density\n")
    run = tmp_path / "run.trec"
    common = ["--index", str(index), "--topics", str(topics), "--mode", "dense", "--hits", "5"]
    assert run_command(search_main, [*common, "--output", str(run), "--ef-search", "7"]) == 0
    prov = json.loads((tmp_path / "run.trec.json").read_text())
    assert prov["dense_search"] == {"faiss": "hnsw", "ef_search": 7}
    assert len(run.read_text().splitlines()) == 10
    capsys.readouterr()
    assert run_command(search_main, [*common, "--output", str(tmp_path / "r2.trec"), "--nprobe", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --nprobe: applies to IVF indexes") and "\n" not in err
