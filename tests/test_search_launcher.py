"""``python -m dupmae_ir.pyserini_hybrid``: the DupMAE encoders are registered in Pyserini's own tables, other
encoder names keep Pyserini's meaning, and the stock CLI runs end to end on a SciFact slice with live
DupMAE query encoding, giving the same run as ``dupmae_ir.search`` (~1 minute)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dupmae_ir.index import load_index
from dupmae_ir.runs import read_trec
from dupmae_ir.search import DupMAESearcher

pytestmark = pytest.mark.slow  # the full SciFact collection / stock Pyserini CLIs

ROOT = Path(__file__).resolve().parent.parent


def test_register_mutates_pyserini_tables(tiny_checkpoint):
    from dupmae_ir.pyserini_hybrid import ENCODER_CLASS, register

    register()
    register()  # idempotent
    import argparse

    import pyserini.search.faiss.__main__ as faiss_main
    from pyserini.encode import TokFreqQueryEncoder, query_encoder_class_map
    from pyserini.search.lucene import LuceneImpactSearcher

    from dupmae_ir.pyserini_encoders import DupMAEImpactQueryEncoder, DupMAEQueryEncoder

    assert ENCODER_CLASS in query_encoder_class_map
    parser = argparse.ArgumentParser()
    faiss_main.define_dsearch_args(parser)
    args = parser.parse_args(["--index", "x", "--encoder-class", "dupmae", "--encoder", str(tiny_checkpoint)])
    assert args.encoder_class == "dupmae"
    dense = query_encoder_class_map["dupmae"](encoder_dir=str(tiny_checkpoint), tokenizer_name=None, device="cpu",
                                              prefix=None, fp16=False)
    assert isinstance(dense, DupMAEQueryEncoder)
    impact = LuceneImpactSearcher._init_query_encoder_from_str(f"dupmae:{tiny_checkpoint}")
    assert isinstance(impact, DupMAEImpactQueryEncoder)
    assert isinstance(LuceneImpactSearcher._init_query_encoder_from_str(str(tiny_checkpoint)), DupMAEImpactQueryEncoder)
    assert isinstance(LuceneImpactSearcher._init_query_encoder_from_str(None), TokFreqQueryEncoder)  # Pyserini's


def test_launcher_runs_stock_hybrid_with_live_dupmae_encoding(tmp_path_factory, tiny_checkpoint, scifact_dir):
    from test_search import build_reference_index

    from dupmae_ir.data import resolve
    from dupmae_ir.modeling.model import RepresentationConfig

    coll = resolve(scifact_dir)
    docs = []
    for d in coll.iter_docs():
        docs.append(d)
        if len(docs) == 200:
            break
    tmp = tmp_path_factory.mktemp("launcher")
    # the checkpoint's own config is what the live encoders use: keep the index's query_topk equal
    build_reference_index(docs, tiny_checkpoint, tmp / "index",
                          query_topk=RepresentationConfig.load(tiny_checkpoint).query_topk)
    info = load_index(tmp / "index")
    queries = dict(list(coll.queries("test").items())[:16])
    topics = tmp / "topics.tsv"
    topics.write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    cmd = [sys.executable, "-m", "dupmae_ir.pyserini_hybrid",
           "dense", "--index", str(info.dense), "--encoder", str(tiny_checkpoint), "--encoder-class", "dupmae",
           "sparse", "--index", str(info.impact), "--impact", "--encoder", f"dupmae:{tiny_checkpoint}",
           "--min-idf", "-1",
           "fusion", "--alpha", repr(info.alpha), "--hits", "200",
           "run", "--topics", str(topics), "--output", str(tmp / "b.trec"), "--hits", "50", "--batch-size", "8",
           "--threads", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stock = read_trec(tmp / "b.trec")
    ours = DupMAESearcher(tmp / "index").search_all(queries, ("hybrid",), hits=50, depth=200, progress=False)["hybrid"]
    assert set(stock) == set(ours)
    for q in ours:
        s_stock, s_ours = dict(stock[q]), dict(ours[q])
        common = s_stock.keys() & s_ours.keys()
        assert len(common) >= 48
        for d in common:
            assert s_stock[d] == pytest.approx(s_ours[d], rel=1e-5, abs=1e-5)
