"""The recipe's whole path (BM25, zero-shot mean pooling, fusion, pre-training, stages 1-2 with and
without pre-training, exact evaluation, one table) on a tiny random model and a toy collection.
The real CPU recipe on SciFact is minutes of compute and is NOT run here (docs/recipe.md)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT, build_tiny_checkpoint
from test_finetune import make_collection


@pytest.mark.slow  # the whole pipeline (pre-training, two stages, mining, eval): a pipeline test, not a unit
def test_recipe_end_to_end_on_a_toy_collection(tmp_path):
    from dupmae_ir.recipe import Recipe, RecipeConfig
    from dupmae_ir.recipe.rows import find

    toy = make_collection(tmp_path / "beir", n_docs=32, n_queries=24)
    # test split = the last 8 queries (train keeps the first 16)
    lines = (toy / "qrels" / "train.tsv").read_text().splitlines()
    (toy / "qrels" / "train.tsv").write_text("\r\n".join(lines[:17]) + "\r\n")
    (toy / "qrels" / "test.tsv").write_text("\r\n".join([lines[0], *lines[17:]]) + "\r\n")
    tiny = build_tiny_checkpoint(tmp_path / "tiny", seed=3)
    cfg = RecipeConfig.of(backbone=str(tiny), corpus=str(toy), output=str(tmp_path / "out"), doc_max_length=32,
                       eval_doc_max_length=32, query_max_length=16, pretrain_steps=2, pretrain_batch_size=4,
                       pretrain_max_seq_length=32, batch_size=4, epochs=1.0, mine_depth=5, stages=(1, 2),
                       head_learning_rate=1e-3, part_loss_weight=0.5, group_size=3, holdout_fraction=0.25,
                       flops_query=0.5, flops_doc=0.25,
                       index_root=str(tmp_path / "indexes"), runs_root=str(tmp_path / "runs"),
                       report_root=str(tmp_path / "eval"))
    recipe = Recipe(cfg, progress=False)
    result = recipe.run()
    rows = recipe.results.rows  # typed records, found by their fields
    assert [r.model for r in rows[:3]] == ["bm25", "zero-shot", "fusion"]
    for arm in ("pt", "nopt"):
        for stages in ((1,), (1, 2)):
            for mode in ("dense", "impact", "hybrid", "fusion"):
                assert find(rows, model=arm, stages=stages, mode=mode) is not None
    assert [r["system"] for r in result["rows"]] == [r.label for r in rows]  # results.json: the labels
    assert rows[-1].label == "no pre-training + stage 1+2: hybrid (normalised fusion)"
    assert all(0.0 <= r["nDCG@10"] <= 1.0 for r in result["rows"])
    assert result["rows"][0]["nDCG@10"] > 0.9  # BM25 finds the key word on this toy set
    for step in ("bm25", "dupmae pre-training", "DupMAE pre-trained: fine-tune stage 2", "total"):
        assert step in result["times"]
    # the product path: indexes, runs, a report with its plot; DupMAE rows from the indexes
    md = (tmp_path / "eval" / "out" / "report.md").read_text()
    assert "| system | nDCG@10 | R@100 | from | note |" in md and "0.732" not in md and " bar " not in md
    assert (tmp_path / "eval" / "out" / "plot.png").stat().st_size > 1000 and "**Commit**" in md
    assert all(r.source == "index" for r in rows if r.model in ("pt", "nopt"))
    for model in ("pt-stage1", "pt-stage2", "nopt-stage1", "nopt-stage2"):
        assert (tmp_path / "indexes" / "out" / model / "dupmae_index.json").is_file()
        assert (tmp_path / "runs" / "out" / f"{model}.hybrid.trec").is_file()
    hybrid = find(rows, model="pt", stages=(1, 2), mode="hybrid")
    assert "in memory" in hybrid.note and result["final_hybrid"] == hybrid.ndcg
    # equal stages: every not-pre-trained row carries its paired test against the pre-trained equal
    nopt = [r for r in rows if r.model == "nopt"]
    assert len(nopt) == 8 and all(r.paired["against"] == find(rows, model="pt", stages=r.stages, mode=r.mode).label
                                  for r in nopt)
    nopt_hybrid = find(rows, model="nopt", stages=(1, 2), mode="hybrid")
    paired = nopt_hybrid.paired
    assert paired["against"] == hybrid.label and paired["n"] == 8
    assert paired["mean_a"] == pytest.approx(nopt_hybrid.ndcg, abs=1e-4)
    assert paired["mean_b"] == pytest.approx(hybrid.ndcg, abs=1e-4)
    from scipy.stats import ttest_rel

    per_query = result["per_query"]["test"]
    assert per_query[hybrid.label] == pytest.approx(hybrid.per_query, abs=1e-6)
    a, b = nopt_hybrid.per_query, hybrid.per_query
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
    assert [(r.model, r.stages, r.mode) for r in recipe.results.dev_rows][:1] == [("pt", (1,), "hybrid")]
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
    from dupmae_ir.recipe import RecipeConfig
    from dupmae_ir.recipe.__main__ import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--quick", "--head-learning-rate", "1e-3", "--pretrain-lr",
                                                      "3e-5",
                                                         "--part-loss-weight", "0.5"]))
    assert cfg.plan.stages == (1,) and cfg.training.head_learning_rate == 1e-3 and cfg.pretrain.pretrain_lr == 3e-5
    assert cfg.finetune.part_loss_weight == 0.5
    default = config_from_args(build_parser().parse_args([]))
    assert default == RecipeConfig()
    assert default.training.head_learning_rate == 1e-3 and default.finetune.part_loss_weight == 1.0
    assert (default.finetune.flops_query, default.finetune.flops_doc) == (0.0, 0.0)
    paper = config_from_args(build_parser().parse_args(["--head-learning-rate", "0", "--part-loss-weight", "0"]))
    assert paper.training.head_learning_rate is None and paper.finetune.part_loss_weight == 0.0
    sparse = config_from_args(build_parser().parse_args(["--flops-query", "1", "--flops-doc", "0.5"]))
    assert (sparse.finetune.flops_query, sparse.finetune.flops_doc) == (1.0, 0.5)


def test_recipe_defaults_and_training_flags():
    from dupmae_ir.recipe.__main__ import build_parser, config_from_args

    d = config_from_args(build_parser().parse_args([])).flat()
    assert (d["group_size"], d["epochs"], d["stage2_epochs"], d["learning_rate"]) == (8, 2.0, 2.0, 1.5e-4)
    assert ((d["precision"], d["eval_precision"], d["dropout"], d["sparse_scale_calibration"])
            == ("auto", "auto", 0.0, True))
    assert d["stages"] == (1, 2) and d["ablation"]
    quick = config_from_args(build_parser().parse_args(["--quick", "--group-size", "4", "--precision", "fp32"])).flat()
    assert (quick["stages"] == (1,) and quick["group_size"] == 4 and quick["precision"] == "fp32"
            and quick["eval_precision"] == "auto")
    old = config_from_args(build_parser().parse_args(
        ["--dropout", "0.1", "--stage2-epochs", "1", "--no-sparse-scale-calibration", "--eval-precision", "fp32"]))
    assert old.finetune.dropout == 0.1 and old.plan.stage2_epochs == 1 and not old.finetune.sparse_scale_calibration
    assert old.eval.eval_precision == "fp32"
    assert not config_from_args(build_parser().parse_args(["--no-ablation"])).plan.ablation


def test_every_setting_is_a_flag():
    """The command line is generated from RecipeConfig: each setting has its flag, and a flag given reaches
    its part (here every one given a non-default value at once)."""
    from dupmae_ir.recipe import RecipeConfig
    from dupmae_ir.recipe.__main__ import build_parser, config_from_args
    from dupmae_ir.recipe.config import training_arguments

    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--" + name.replace("_", "-") for name in RecipeConfig.settings()} <= flags
    argv = ["--backbone", "b", "--corpus", "c", "--train-split", "tr", "--test-split", "te", "--no-test",
            "--precision", "fp32", "--head-learning-rate", "0.5", "--seed", "7", "--pretrain-steps", "3",
            "--pretrain-batch-size", "5", "--pretrain-max-seq-length", "64", "--pretrain-lr", "1e-5",
            "--pretrain-corpus", "pc", "--pretrain-head-lr", "0.1", "--pretrain-encoder-mask", "0.4",
            "--pretrain-decoder-mask", "0.6", "--pretrain-bow-weight", "1", "--activation", "log1p_relu",
            "--epochs", "3", "--batch-size", "3", "--group-size", "4",
            "--learning-rate", "1e-5", "--temperature", "0.5", "--sparse-weight", "0.5", "--part-loss-weight", "0.5",
            "--flops-query", "1", "--flops-doc", "1", "--bow-loss-weight", "0.2", "--sparse-calibration", "0.1",
            "--no-sparse-scale-calibration",
            "--mine-depth", "9", "--mine-skip", "1", "--dropout", "0.1", "--doc-max-length", "64",
            "--query-max-length", "16", "--holdout-fraction", "0.5", "--holdout-seed", "1", "--stages", "2",
            "--stage2-epochs", "3", "--no-ablation", "--pretrained", "p", "--stage1", "s1", "--query-topk", "8",
            "--query-min-weight", "0.1", "--query-terms", "own", "--eval-doc-max-length", "64",
            "--eval-precision", "bf16", "--threads", "2",
            "--output", "o/x", "--index-root", "i", "--runs-root", "r", "--report-root", "e"]
    cfg = config_from_args(parser.parse_args(argv))
    given, default = cfg.flat(), RecipeConfig().flat()
    assert given.keys() == default.keys() and all(given[k] != default[k] for k in given)
    # a training part fills its training dataclass field by field (stage 2: no stage-1 calibration)
    args = training_arguments((cfg.training, cfg.finetune), stage=2, output_dir="o")
    assert (args.stage, args.num_train_epochs, args.mine_depth, args.seed) == (2, 3.0, 9, 7)
    assert args.sparse_calibration is None
    assert (args.head_learning_rate, args.holdout_fraction, args.learning_rate) == (0.5, 0.5, 1e-5)
    assert args.activation is None  # stage 2 keeps the stage-1 checkpoint's activation
    assert training_arguments((cfg.training, cfg.finetune), stage=1, output_dir="o").activation == "log1p_relu"
    # pre-training: its own head lr, masks and bag-of-words weight; without --pretrain-head-lr the shared one
    pre = training_arguments((cfg.training, cfg.pretrain), output_dir="o")
    assert (pre.head_learning_rate, pre.encoder_mlm_probability, pre.decoder_mlm_probability,
            pre.bow_loss_weight, pre.corpus) == (0.1, 0.4, 0.6, 1.0, "pc")
    plain = RecipeConfig.of(head_learning_rate=0.5)
    assert training_arguments((plain.training, plain.pretrain), output_dir="o").head_learning_rate == 0.5


@pytest.mark.slow  # a whole selection run of the recipe (pre-training, stage 1, dev scoring) on a toy collection
def test_selection_run_reads_no_test_split(tmp_path):
    """``test=False`` (what bench/recipe_study.py runs): dev rows only, nothing indexed, and the test
    split is never read (its qrels file is removed here)."""
    from dupmae_ir.recipe import Recipe, RecipeConfig

    toy = make_collection(tmp_path / "beir", n_docs=32, n_queries=24)
    tiny = build_tiny_checkpoint(tmp_path / "tiny", seed=3)
    assert not (toy / "qrels" / "test.tsv").exists()
    cfg = RecipeConfig.of(backbone=str(tiny), corpus=str(toy), output=str(tmp_path / "sel"), doc_max_length=32,
                       eval_doc_max_length=32, query_max_length=16, pretrain_steps=2, pretrain_batch_size=4,
                       pretrain_max_seq_length=32, batch_size=4, epochs=1.0, mine_depth=5, stages=(1,), ablation=False,
                       group_size=3, holdout_fraction=0.25, test=False, index_root=str(tmp_path / "indexes"),
                       runs_root=str(tmp_path / "runs"), report_root=str(tmp_path / "eval"))
    recipe = Recipe(cfg, progress=False)
    result = recipe.run()
    assert result["rows"] == []
    assert [(r.model, r.stages, r.mode) for r in recipe.results.dev_rows] == [("pt", (1,), "hybrid")]
    assert not (tmp_path / "indexes").exists() and not (tmp_path / "runs").exists()
    assert "Dev split" in (tmp_path / "eval" / "sel" / "report.md").read_text()

    # stage 2 alone from that stage-1 checkpoint (bench/recipe_study.py stage2): mined negatives, one dev row
    from dupmae_ir.data.training import read_negatives_file
    from dupmae_ir.modeling.model import RepresentationConfig

    two = cfg.replace(output=str(tmp_path / "sel2"), stages=(1, 2), stage1=str(tmp_path / "sel" / "pt-stage1"),
                  mine_depth=4, mine_skip=1, stage2_epochs=2.0)
    recipe = Recipe(two, progress=False)
    result = recipe.run()
    assert [(r.model, r.stages, r.mode) for r in recipe.results.dev_rows] == [("pt", (2,), "hybrid")]
    assert result["dev_rows"][0]["system"] == "DupMAE pre-trained + stage 2: hybrid (sum)"  # the label shown
    assert not (tmp_path / "sel2" / "pretrained").exists() and not (tmp_path / "sel2" / "pt-stage1").exists()
    per_query = read_negatives_file(tmp_path / "sel2" / "pt-stage2-negatives.tsv")
    assert per_query and max(len(v) for v in per_query.values()) == 4  # depth 4 kept after the skipped one
    ft = RepresentationConfig.load(tmp_path / "sel2" / "pt-stage2").finetuning
    assert ft["stage"] == 2 and ft["start"] == two.plan.stage1 and ft["epochs"] == 2.0 and ft["mine_skip"] == 1


def test_report_says_which_settings_were_given_instead_of_chosen():
    """The report's 'chosen on' table describes the defaults; a run that overrides one says so."""
    from dupmae_ir.recipe import RecipeConfig
    from dupmae_ir.recipe.report import chosen_on

    default = dict(chosen_on(RecipeConfig()))
    assert not any(on.startswith("not used here") for on in default.values())
    given = dict(chosen_on(RecipeConfig.of(pretrain_steps=320, learning_rate=5e-5)))
    assert given["pre-training: 240 steps at lr 1e-4, MLM-head lr 1e-3"].startswith("not used here: pretrain_steps=320")
    assert "learning_rate=5e-05" in given["fine-tuning lr and sparse scale calibration"]
    assert given["query pruning (top-k, minimum weight)"] == default["query pruning (top-k, minimum weight)"]


def test_report_settings_name_each_stage_epochs():
    """The settings line says how many epochs each stage trained (stage 2 has its own default)."""
    from dupmae_ir.recipe import RecipeConfig
    from dupmae_ir.recipe.report import _epochs

    assert _epochs(RecipeConfig()) == "2 epoch(s) per stage"
    assert _epochs(RecipeConfig.of(epochs=1.0)) == "1 epoch(s) in stage 1, 2 in stage 2"
    assert _epochs(RecipeConfig.of(epochs=1.0, stage2_epochs=None)) == "1 epoch(s) per stage"
    assert _epochs(RecipeConfig.of(epochs=1.0, stages=(1,))) == "1 epoch(s) per stage"
