"""``bench/recipe_study.py pretraining`` (bench/pretrain_study.py) and what it needs: the variant syntax, a
pre-training corpus mixed from two collections, and the study end to end on a tiny model and a toy
collection that has no test split (so reading it would fail)."""
from __future__ import annotations

import argparse
import json
import sys

import pytest
from conftest import ROOT, build_tiny_checkpoint
from test_finetune import make_collection

sys.path.insert(0, str(ROOT / "bench"))
import pretrain_study  # noqa: E402


def test_variant_syntax():
    parse = pretrain_study.parse_variant
    v = parse("bow_weight=1,steps=800,lr=1e-4")
    assert v.pretrained and v.label == "steps=800,lr=0.0001,bow_weight=1"  # canonical: key order, numbers
    assert v.settings() == {"pretrain_steps": 800, "pretrain_lr": 1e-4, "pretrain_bow_weight": 1.0}
    assert parse("steps=800,lr=0.0001,bow_weight=1.0") == v and parse("steps=800").folder != v.folder
    assert parse("none") == pretrain_study.Variant(False) and parse("default") == pretrain_study.Variant(True)
    n = parse("none,flops=1")
    assert not n.pretrained and n.settings() == {"flops_query": 1.0, "flops_doc": 1.0}
    assert parse("steps=2,flops=1").finetuning == n.finetuning  # equal fine-tuning: n is its reference
    assert pretrain_study.reference(parse("steps=2,flops=1"), [parse("none"), n]) == n
    assert pretrain_study.reference(parse("steps=2"), [parse("none"), n]) == parse("none")
    for bad, why in (("step=2", "KEY=VALUE"), ("none,steps=2", "pre-training key"), ("steps=0", "steps"),
                     ("enc_mask=1.5", "enc_mask"), ("steps=2,steps=3", "twice"), ("activation=gelu", "activation")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            parse(bad)


def test_mixed_pretraining_corpus(tmp_path):
    from dupmae_ir.data.pretrain_corpus import MixedCorpus, build_pretraining_corpus, corpus_parts
    from dupmae_ir.data.types import DataError
    from dupmae_ir.modeling.backbone import load_tokenizer

    a, b = make_collection(tmp_path / "a", n_docs=5), make_collection(tmp_path / "b", n_docs=3, seed=1)
    tok = load_tokenizer("default")
    mixed = build_pretraining_corpus(f"{a}+{b}", tok, 32, cache_dir=tmp_path / "cache")
    one_a, one_b = (build_pretraining_corpus(str(c), tok, 32, cache_dir=tmp_path / "cache") for c in (a, b))
    assert isinstance(mixed, MixedCorpus) and len(mixed) == 8
    assert mixed.num_tokens == one_a.num_tokens + one_b.num_tokens
    assert [mixed[i]["index"] for i in range(8)] == list(range(8))  # the collator's masks differ per example
    assert (mixed[6]["input_ids"] == one_b[1]["input_ids"]).all()
    assert (mixed[0]["input_ids"] == one_a[0]["input_ids"]).all()
    plus = tmp_path / "x+y"
    plus.mkdir()
    assert corpus_parts(str(plus)) == [str(plus)] and corpus_parts("default") == ["default"]
    with pytest.raises(DataError, match="NAME\\+NAME"):
        corpus_parts("default+")


@pytest.mark.slow  # two recipe runs on a toy collection: a pipeline test
def test_study_end_to_end_resumes_and_reads_no_test_split(tmp_path, monkeypatch, capsys):
    toy = make_collection(tmp_path / "beir", n_docs=24, n_queries=20)  # train qrels only: no test split to read
    extra = make_collection(tmp_path / "extra", n_docs=6, seed=2)
    tiny = build_tiny_checkpoint(tmp_path / "tiny", seed=3)
    report = tmp_path / "report.md"
    argv = ["recipe_study.py", "pretraining", "--work", str(tmp_path / "work"), "--report", str(report),
            "--variant", f"steps=2,bow_weight=1,corpus={toy}+{extra}", "--backbone", str(tiny), "--corpus", str(toy),
            "--pretrain-batch-size", "4", "--pretrain-max-seq-length", "32", "--doc-max-length", "32",
            "--eval-doc-max-length", "32", "--query-max-length", "16", "--batch-size", "4", "--group-size", "3",
            "--threads", "1"]
    monkeypatch.setenv("DUPMAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", argv)
    import recipe_study

    assert recipe_study.main() == 0
    arms = {json.loads(p.read_text())["variant"]: json.loads(p.read_text())
            for p in (tmp_path / "work" / "pretraining").glob("*/study.json")}
    assert set(arms) == {"none", f"steps=2,bow_weight=1,corpus={toy}+{extra}"}
    pt = arms[f"steps=2,bow_weight=1,corpus={toy}+{extra}"]
    meta = json.loads(next((tmp_path / "work" / "pretraining").glob("steps2*/pretrained/dupmae_pretrain.json"))
                      .read_text())
    assert meta["pretraining"]["examples"] == 30 and meta["pretraining"]["options"]["bow_loss_weight"] == 1.0
    assert pt["config"]["pretrain_steps"] == 2 and arms["none"]["config"]["pretrained"] == str(tiny)
    for arm in arms.values():
        assert {"dense", "impact", "hybrid"} <= set(arm["dev"]) and len(arm["dev"]["hybrid"]["per_query"]) == 4
        assert 0.0 <= arm["dev"]["grounded"]["share"] <= 1.0
    from dupmae_ir.eval.significance import compare_per_query, format_p

    test = compare_per_query(arms["none"]["dev"]["hybrid"]["per_query"], pt["dev"]["hybrid"]["per_query"])
    text = report.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `steps=2"))
    assert f"{test.delta:+.4f}" in row and f"| {format_p(test.p_t)} |" in row and "| `none` |" in text
    assert "BM25 (Pyserini, flat)" in text and str(tmp_path) not in text  # portable paths only
    capsys.readouterr()
    assert recipe_study.main() == 0  # resumed: every arm read back, nothing trained again
    assert capsys.readouterr().out.count("read back from") == 2
