"""The recipe's whole path (BM25, zero-shot mean pooling, fusion, pre-training, stages 1-2 with and
without pre-training, exact evaluation, one table) on a tiny random model and a toy collection.
The real CPU recipe on SciFact is minutes of compute and is NOT run here (docs/recipe.md)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import ROOT, build_tiny_checkpoint
from test_finetune import make_collection


def test_recipe_end_to_end_on_a_toy_collection(tmp_path):
    from dupmae_ir.recipe import Recipe, RecipeConfig

    toy = make_collection(tmp_path / "beir", n_docs=32, n_queries=24)
    # test split = the last 8 queries (train keeps the first 16)
    lines = (toy / "qrels" / "train.tsv").read_text().splitlines()
    (toy / "qrels" / "train.tsv").write_text("\r\n".join(lines[:17]) + "\r\n")
    (toy / "qrels" / "test.tsv").write_text("\r\n".join([lines[0], *lines[17:]]) + "\r\n")
    tiny = build_tiny_checkpoint(tmp_path / "tiny", seed=3)
    cfg = RecipeConfig(backbone=str(tiny), corpus=str(toy), output=str(tmp_path / "out"), doc_max_length=32,
                       eval_doc_max_length=32, query_max_length=16, pretrain_steps=2, pretrain_batch_size=4,
                       pretrain_max_seq_length=32, batch_size=4, mine_depth=5, stages=(1, 2),
                       head_learning_rate=1e-3, part_loss_weight=0.5, group_size=3, holdout_fraction=0.25,
                       flops_query=0.5, flops_doc=0.25,
                       index_root=str(tmp_path / "indexes"), runs_root=str(tmp_path / "runs"),
                       report_root=str(tmp_path / "eval"))
    result = Recipe(cfg, progress=False).run()
    systems = [r["system"] for r in result["rows"]]
    assert systems[:3] == ["BM25 (Pyserini, flat)", "backbone zero-shot, mean pooling (dense)",
                           "BM25 + backbone(mean), normalised fusion"]
    for name in ("DupMAE pre-trained + stage 1: hybrid (sum)", "DupMAE pre-trained + stage 1+2: hybrid (sum)",
                 "DupMAE pre-trained + stage 1+2: dense", "DupMAE pre-trained + stage 1+2: impact",
                 "no pre-training + stage 1: hybrid (sum)", "no pre-training + stage 1+2: hybrid (sum)"):
        assert name in systems
    assert all(0.0 <= r["nDCG@10"] <= 1.0 for r in result["rows"])
    assert result["rows"][0]["nDCG@10"] > 0.9  # BM25 finds the key word on this toy set
    for step in ("bm25", "dupmae pre-training", "DupMAE pre-trained: fine-tune stage 2", "total"):
        assert step in result["times"]
    # the product path: indexes, runs, a report with its plot; DupMAE rows from the indexes
    md = (tmp_path / "eval" / "out" / "report.md").read_text()
    assert "| system | nDCG@10 | R@100 | from | note |" in md and "0.732" not in md and " bar " not in md
    assert (tmp_path / "eval" / "out" / "plot.png").stat().st_size > 1000 and "**Commit**" in md
    assert all(r["source"] == "index" for r in result["rows"] if r["system"].startswith(("DupMAE", "no pre")))
    for model in ("pt-stage1", "pt-stage2", "nopt-stage1", "nopt-stage2"):
        assert (tmp_path / "indexes" / "out" / model / "dupmae_index.json").is_file()
        assert (tmp_path / "runs" / "out" / f"{model}.hybrid.trec").is_file()
    hybrid = next(r for r in result["rows"] if r["system"] == "DupMAE pre-trained + stage 1+2: hybrid (sum)")
    assert "in memory" in hybrid["note"]
    # equal stages: every not-pre-trained row carries its paired test against the pre-trained equal
    nopt = {r["system"]: r for r in result["rows"] if r["system"].startswith("no pre-training")}
    assert len(nopt) == 8 and all(r["paired"]["against"] == "DupMAE pre-trained" + s[len("no pre-training"):]
                                  for s, r in nopt.items())
    paired = nopt["no pre-training + stage 1+2: hybrid (sum)"]["paired"]
    assert paired["against"] == "DupMAE pre-trained + stage 1+2: hybrid (sum)" and paired["n"] == 8
    assert paired["mean_a"] == pytest.approx(nopt["no pre-training + stage 1+2: hybrid (sum)"]["nDCG@10"], abs=1e-4)
    assert paired["mean_b"] == pytest.approx(hybrid["nDCG@10"], abs=1e-4)
    from scipy.stats import ttest_rel

    per_query = result["per_query"]["test"]
    a, b = per_query["no pre-training + stage 1+2: hybrid (sum)"], per_query[hybrid["system"]]
    assert sorted(a) == sorted(b) and len(a) == 8  # the 8 judged test queries
    if any(a[q] != b[q] for q in a):
        assert paired["p_t"] == pytest.approx(ttest_rel([b[q] for q in a], [a[q] for q in a]).pvalue, abs=1e-6)
    assert 0 < paired["p_rand"] <= 1 and paired["ci_low"] <= paired["delta"] <= paired["ci_high"]
    whats = {c["what"] for c in result["comparisons"] if c["split"] == "test"}
    assert {"pre-training, stage 1+2: hybrid (sum)", "stage 2 (DupMAE pre-trained)", "stage 2 (no pre-training)",
            "final hybrid vs BM25", "final impact alone vs BM25"} <= whats
    dev = {c["what"] for c in result["comparisons"] if c["split"] == "dev"}
    assert "pre-training, stage 1+2: hybrid (sum)" in dev
    assert "## Paired comparisons" in md and "| test | pre-training, stage 1+2: hybrid (sum) |" in md
    # the grounded share of each model's queries, printed beside its impact run
    assert set(result["grounding"]) == {f"{arm} + stage {s}" for arm in ("DupMAE pre-trained", "no pre-training")
                                        for s in ("1", "1+2")}
    assert all(0.0 <= g["share"] <= 1.0 and g["split"] == "test" for g in result["grounding"].values())
    assert "## The bag-of-words: grounded share" in md
    assert [r["system"] for r in result["dev_rows"]][:1] == ["DupMAE pre-trained + stage 1: hybrid (sum)"]
    held_out = set(json.loads((tmp_path / "out" / "pt-stage1" / "dupmae_finetune.json").read_text())
                   ["finetuning"]["holdout_fraction"] for _ in [0])
    assert held_out == {0.25}
    finetuning = json.loads((tmp_path / "out" / "pt-stage2" / "dupmae_finetune.json").read_text())["finetuning"]
    assert (finetuning["flops_query"], finetuning["flops_doc"]) == (0.5, 0.25)
    # the printed stock Pyserini command reproduces the toolkit's hybrid run from the same files
    command = result["stock_command"]
    assert command.startswith("PYTHONHASHSEED=0 python -m dupmae_ir.pyserini_run search.hybrid") and command in md
    argv = shlex.split(command)[1:]  # without the PYTHONHASHSEED=0 prefix, set in env below
    assert argv[0] == "python"
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *argv[1:]], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from dupmae_ir.runs import read_trec

    stock = read_trec(tmp_path / "runs" / "out" / "pt-stage2.hybrid.pyserini.trec")
    ours = read_trec(tmp_path / "runs" / "out" / "pt-stage2.hybrid.trec")
    assert stock.keys() == ours.keys()
    for q in ours:
        s, o = dict(stock[q]), dict(ours[q])
        common = s.keys() & o.keys()
        assert len(common) >= 0.95 * min(len(s), len(o)) and all(abs(s[d] - o[d]) < 1e-3 for d in common)
    prov = json.loads((tmp_path / "out" / "results.json").read_text())
    assert prov["kind"] == "dupmae_ir.recipe" and prov["dupmae_ir_version"]
    # stage 2 trained on negatives mined by the stage-1 model, positives removed
    from dupmae_ir.modeling.model import RepresentationConfig

    assert RepresentationConfig.load(tmp_path / "out" / "pretrained").pretraining["head_learning_rate"] == 1e-3
    assert RepresentationConfig.load(tmp_path / "out" / "nopt-stage1").finetuning["head_learning_rate"] == 1e-3
    assert RepresentationConfig.load(tmp_path / "out" / "pt-stage2").finetuning["part_loss_weight"] == 0.5
    # default on
    assert RepresentationConfig.load(tmp_path / "out" / "pt-stage1").finetuning["sparse_scale_calibration"] > 0
    # stage 1 only
    assert RepresentationConfig.load(tmp_path / "out" / "pt-stage2").finetuning["sparse_scale_calibration"] is None
    assert prov["eval_precision"] in ("fp32", "bf16") and prov["training_precision"] in ("fp32", "bf16")
    negs = (tmp_path / "out" / "pt-stage2-negatives.tsv").read_text().splitlines()
    assert negs and all(d != "d" + q[1:] for q, d in (n.split("\t") for n in negs))


def test_recipe_cli_flags_reach_the_config():
    from dupmae_ir.recipe.__main__ import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--quick", "--head-learning-rate", "1e-3", "--pretrain-lr",
                                                      "3e-5",
                                                         "--part-loss-weight", "0.5"]))
    assert cfg.stages == (1,) and cfg.head_learning_rate == 1e-3 and cfg.pretrain_lr == 3e-5
    assert cfg.part_loss_weight == 0.5
    default = config_from_args(build_parser().parse_args([]))
    assert default.head_learning_rate == 1e-3 and default.part_loss_weight == 1.0
    assert (default.flops_query, default.flops_doc) == (0.0, 0.0)
    paper = config_from_args(build_parser().parse_args(["--head-learning-rate", "0", "--part-loss-weight", "0"]))
    assert paper.head_learning_rate is None and paper.part_loss_weight == 0.0
    sparse = config_from_args(build_parser().parse_args(["--flops-query", "1", "--flops-doc", "0.5"]))
    assert (sparse.flops_query, sparse.flops_doc) == (1.0, 0.5)


def test_recipe_defaults_and_training_flags():
    from dupmae_ir.recipe.__main__ import build_parser, config_from_args

    d = config_from_args(build_parser().parse_args([]))
    assert (d.group_size, d.epochs, d.stage2_epochs, d.learning_rate) == (8, 1.0, 2.0, 1.5e-4)
    assert (d.precision, d.eval_precision, d.dropout, d.sparse_scale_calibration) == ("auto", "auto", 0.0, True)
    assert d.stages == (1, 2) and d.ablation
    quick = config_from_args(build_parser().parse_args(["--quick", "--group-size", "4", "--precision", "fp32"]))
    assert (quick.stages == (1,) and quick.group_size == 4 and quick.precision == "fp32"
            and quick.eval_precision == "auto")
    old = config_from_args(build_parser().parse_args(
        ["--dropout", "0.1", "--stage2-epochs", "1", "--no-sparse-scale-calibration", "--eval-precision", "fp32"]))
    assert old.dropout == 0.1 and old.stage2_epochs == 1 and not old.sparse_scale_calibration
    assert old.eval_precision == "fp32"
    assert not config_from_args(build_parser().parse_args(["--no-ablation"])).ablation


def test_selection_run_reads_no_test_split(tmp_path):
    """``test=False`` (what bench/recipe_study.py runs): dev rows only, nothing indexed, and the test
    split is never read (its qrels file is removed here)."""
    from dupmae_ir.recipe import Recipe, RecipeConfig

    toy = make_collection(tmp_path / "beir", n_docs=32, n_queries=24)
    tiny = build_tiny_checkpoint(tmp_path / "tiny", seed=3)
    assert not (toy / "qrels" / "test.tsv").exists()
    cfg = RecipeConfig(backbone=str(tiny), corpus=str(toy), output=str(tmp_path / "sel"), doc_max_length=32,
                       eval_doc_max_length=32, query_max_length=16, pretrain_steps=2, pretrain_batch_size=4,
                       pretrain_max_seq_length=32, batch_size=4, mine_depth=5, stages=(1,), ablation=False,
                       group_size=3, holdout_fraction=0.25, test=False, index_root=str(tmp_path / "indexes"),
                       runs_root=str(tmp_path / "runs"), report_root=str(tmp_path / "eval"))
    result = Recipe(cfg, progress=False).run()
    assert result["rows"] == []
    assert [r["system"] for r in result["dev_rows"]] == ["DupMAE pre-trained + stage 1: hybrid (sum)"]
    assert not (tmp_path / "indexes").exists() and not (tmp_path / "runs").exists()
    assert "Dev split" in (tmp_path / "eval" / "sel" / "report.md").read_text()

    # stage 2 alone from that stage-1 checkpoint (bench/recipe_study.py stage2): mined negatives, one dev row
    from dupmae_ir.data.training import read_negatives_file
    from dupmae_ir.modeling.model import RepresentationConfig

    two = replace(cfg, output=str(tmp_path / "sel2"), stages=(1, 2), stage1=str(tmp_path / "sel" / "pt-stage1"),
                  mine_depth=4, mine_skip=1, stage2_epochs=2.0)
    result = Recipe(two, progress=False).run()
    assert [r["system"] for r in result["dev_rows"]] == ["DupMAE pre-trained + stage 2: hybrid (sum)"]
    assert not (tmp_path / "sel2" / "pretrained").exists() and not (tmp_path / "sel2" / "pt-stage1").exists()
    per_query = read_negatives_file(tmp_path / "sel2" / "pt-stage2-negatives.tsv")
    assert per_query and max(len(v) for v in per_query.values()) == 4  # depth 4 kept after the skipped one
    ft = RepresentationConfig.load(tmp_path / "sel2" / "pt-stage2").finetuning
    assert ft["stage"] == 2 and ft["start"] == two.stage1 and ft["epochs"] == 2.0 and ft["mine_skip"] == 1


def test_report_says_which_settings_were_given_instead_of_chosen():
    """The report's 'chosen on' table describes the defaults; a run that overrides one says so."""
    from dupmae_ir.recipe import RecipeConfig
    from dupmae_ir.recipe.report import chosen_on

    default = dict(chosen_on(RecipeConfig()))
    assert not any(on.startswith("not used here") for on in default.values())
    given = dict(chosen_on(RecipeConfig(pretrain_steps=320, learning_rate=5e-5)))
    assert given["pre-training: 80 steps at lr 2e-5, MLM-head lr 1e-3"].startswith("not used here: pretrain_steps=320")
    assert "learning_rate=5e-05" in given["fine-tuning lr and sparse scale calibration"]
    assert given["query pruning (top-k, minimum weight)"] == default["query pruning (top-k, minimum weight)"]


def test_report_settings_name_each_stage_epochs():
    """The settings line says how many epochs each stage trained (stage 2 has its own default)."""
    from dupmae_ir.recipe import RecipeConfig
    from dupmae_ir.recipe.report import _epochs

    assert _epochs(RecipeConfig()) == "1 epoch(s) in stage 1, 2 in stage 2"
    assert _epochs(RecipeConfig(stage2_epochs=None)) == "1 epoch(s) per stage"
    assert _epochs(RecipeConfig(stages=(1,))) == "1 epoch(s) per stage"
