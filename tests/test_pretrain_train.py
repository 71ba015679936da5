"""DupMAE pre-training runs: the saved checkpoint loads everywhere it should; an interrupted run
resumed with ``resume`` ends exactly where an uninterrupted one does; a 2-process gloo ``torchrun``
run completes with both ranks holding the same weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from dupmae_ir.errors import OutputError

ROOT = Path(__file__).resolve().parent.parent


def _args(checkpoint, output_dir, cache_dir, **kw):
    from dupmae_ir.train.arguments import PretrainArguments

    base = dict(model_name_or_path=str(checkpoint), corpus="default", max_docs=40, max_seq_length=32, batch_size=8,
                max_steps=8, save_steps=3, logging_steps=1, output_dir=str(output_dir), cache_dir=str(cache_dir),
                disable_tqdm=True)
    base.update(kw)
    return PretrainArguments(**base)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


class CrashError(RuntimeError):
    pass


def test_interrupted_then_resumed_equals_uninterrupted(tiny_checkpoint, tmp_path):
    """40 docs / batch 8 = 5 steps per epoch; the crash after checkpoint-6 resumes inside epoch 2."""
    from transformers import TrainerCallback

    from dupmae_ir.train.pretraining import run_pretraining

    class CrashAtStep7(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 7:
                raise CrashError("simulated interruption")

    cache = tmp_path / "cache"
    full = run_pretraining(_args(tiny_checkpoint, tmp_path / "full", cache))
    with pytest.raises(CrashError):
        run_pretraining(_args(tiny_checkpoint, tmp_path / "cut", cache), callbacks=[CrashAtStep7()])
    assert not (tmp_path / "cut" / "dupmae_pretrain.json").exists()
    resumed = run_pretraining(_args(tiny_checkpoint, tmp_path / "cut", cache, resume=True))

    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    prov_full = json.loads((full / "dupmae_pretrain.json").read_text())
    prov_cut = json.loads((resumed / "dupmae_pretrain.json").read_text())
    assert prov_full["pretraining"]["steps"] == prov_cut["pretraining"]["steps"] == 8
    assert prov_cut["resumed_from"].endswith("checkpoint-6") and prov_cut["steps_this_run"] == 2
    losses = {h["step"]: h["loss"] for h in prov_full["log_history"] if "loss" in h}
    for h in prov_cut["log_history"]:  # the resumed run logs the same losses for steps 7-8
        if "loss" in h and h["step"] > 6:
            assert h["loss"] == pytest.approx(losses[h["step"]], abs=1e-6)


def test_output_is_a_standard_masked_lm_checkpoint(tiny_checkpoint, tmp_path):
    from transformers import AutoModelForMaskedLM

    from dupmae_ir.modeling.model import DupMAEModel, RepresentationConfig
    from dupmae_ir.train.pretraining import run_pretraining

    out = run_pretraining(_args(tiny_checkpoint, tmp_path / "out", tmp_path / "cache", max_steps=2, method="paper"))
    keys = _weights(out).keys()
    assert not any(k.startswith(("decoder.", "mlm.")) for k in keys)  # decoder layer dropped, HF key names
    mlm = AutoModelForMaskedLM.from_pretrained(out, use_safetensors=True)
    assert type(mlm).__name__ == "BertForMaskedLM"
    retriever, tokenizer = DupMAEModel.from_pretrained(out)
    pre = RepresentationConfig.load(out).pretraining
    assert pre["preset"] == "paper" and pre["options"]["bow_loss_weight"] == 1.0 and pre["steps"] == 2
    assert pre["options"]["bow_pool_masked"] is False
    enc = tokenizer(["dense and sparse"], return_tensors="pt")
    dense, bow = retriever(enc["input_ids"], enc["attention_mask"])
    assert dense.shape == (1, 32) and bow.shape == (1, len(tokenizer))
    prov = json.loads((out / "dupmae_pretrain.json").read_text())
    assert prov["dupmae_ir_version"] and prov["arguments"]["corpus"] == "default"
    assert all({"mlm_loss", "dec_loss", "bow_loss"} <= set(h) for h in prov["log_history"] if "loss" in h)
    # a finished model is not overwritten silently
    with pytest.raises(OutputError, match="already holds a finished"):
        run_pretraining(_args(tiny_checkpoint, tmp_path / "out", tmp_path / "cache", max_steps=2))


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_checkpoint, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [str(torchrun), "--nproc_per_node", "2", "--standalone", str(ROOT / "tests" / "pretrain_ddp_worker.py"),
           str(tiny_checkpoint), "default", str(out), str(tmp_path / "cache")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["step"] == 3 for r in ranks)
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    prov = json.loads((out / "dupmae_pretrain.json").read_text())
    assert prov["pretraining"]["world_size"] == 2


def test_cli_help_has_argument_groups_and_clear_errors(tmp_path):
    proc = run_cli("pretrain", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for section in ("model:", "data:", "method:", "optimisation:", "run control:"):
        assert section in out
    for flag in ("--corpus", "--batch-size", "--max-seq-length", "--resume", "--method {code,paper}"):
        assert flag in out
    bad = run_cli("pretrain", "--resume", "--output-dir", tmp_path / "none")
    assert bad.returncode != 0 and "no checkpoint to continue from" in bad.stderr


def test_head_learning_rate_trains_the_head_and_spares_the_encoder(tiny_checkpoint, tmp_path):
    """--head-learning-rate: with the encoder's learning rate at 0 only the parameters outside the
    backbone body (MLM-head transform/bias; the decoder layer is dropped at save) move."""
    from dupmae_ir.train.pretraining import run_pretraining

    start = _weights(tiny_checkpoint)
    out = run_pretraining(_args(tiny_checkpoint, tmp_path / "out", tmp_path / "cache", max_steps=3,
                                learning_rate=0.0, head_learning_rate=1e-2, warmup_ratio=0.0))
    end = _weights(out)
    body = [k for k in start if k.startswith("bert.")]
    head = [k for k in start if k.startswith("cls.predictions.transform.")]
    assert body and head
    assert all(torch.equal(start[k], end[k]) for k in body)
    assert all(not torch.equal(start[k], end[k]) for k in head)
    assert json.loads((out / "dupmae_pretrain.json").read_text())["arguments"]["head_learning_rate"] == 1e-2
