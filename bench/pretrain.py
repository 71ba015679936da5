"""Benchmark: one DupMAE pre-training step against a plain masked-LM step of the same backbone.

The plain step (Hugging Face ``BertForMaskedLM(..., labels=...)`` on the encoder-masked input, the
cost floor of any MLM pre-training) and the DupMAE step (:class:`DupMAEForPretraining`: MLM + [CLS]
decoder + bag-of-words losses) run on the *same* collated batches of the same corpus, with the same
optimizer (AdamW); steps of the two alternate so machine load drifts hit both alike. Reported:
seconds per step (median), tokens/s (real tokens, padding excluded), peak memory of a step, and
the DupMAE / MLM ratios. Peak memory: on GPU ``torch.cuda.max_memory_allocated``; on CPU the peak
resident-set growth of a fresh subprocess running the steps of one variant (model and batches
loaded before the baseline is read).

Reference point (issue 6): the authors' own DupMAE code measures 1.80x here (3.72 s vs 2.07 s per
step, MiniLM, batch 16, length 128, 2 threads). Target: <= 1.6x.

    python bench/pretrain.py                      # MiniLM, bundled SciFact, batch 16, length 128
    python bench/pretrain.py --steps 8 --precision bf16
    python bench/pretrain.py --report eval/FILE.md   # also as a Markdown report (command, date, machine, commit)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _harness import Timer, add_report_args, header, markdown_table, portable, write_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_batches(args):
    from dupmae_ir.data.collator import DupMAECollator
    from dupmae_ir.data.pretrain_corpus import build_tokenized_corpus
    from dupmae_ir.modeling.backbone import load_tokenizer

    tokenizer = load_tokenizer(args.model_name_or_path)
    data = build_tokenized_corpus(args.corpus, tokenizer, args.max_seq_length,
                                  max_docs=args.batch_size * (args.steps + args.warmup) * 2)
    collator = DupMAECollator(tokenizer, max_seq_length=args.max_seq_length, seed=0)
    n = args.steps + args.warmup
    return [collator([data[b * args.batch_size + i] for i in range(args.batch_size)]) for b in range(n)]


def make_steps(args, device, only: str | None = None):
    """Two closures ``step(batch)`` -> loss: plain MLM and DupMAE, same initial weights (``only``: build one)."""
    import copy

    import torch

    from dupmae_ir.modeling.backbone import load_masked_lm
    from dupmae_ir.modeling.dupmae import DupMAEForPretraining

    torch.manual_seed(0)
    mlm = load_masked_lm(args.model_name_or_path).to(device).train()
    dupmae = DupMAEForPretraining(copy.deepcopy(mlm) if only is None else mlm).to(device).train()
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def plain(batch):
        out = mlm(input_ids=batch["encoder_input_ids"], attention_mask=batch["encoder_attention_mask"],
                  labels=batch["encoder_labels"])
        return out.loss

    def duplex(batch):
        return dupmae(**batch).loss

    def trainer_step(model, forward):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # as the HF Trainer (adamw_torch_fused)

        def step(batch):
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(**autocast):
                loss = forward(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return float(loss.detach())

        return step

    if only == "mlm":
        return {"mlm": trainer_step(mlm, plain)}
    if only == "dupmae":
        return {"dupmae": trainer_step(dupmae, duplex)}
    return {"mlm": trainer_step(mlm, plain), "dupmae": trainer_step(dupmae, duplex)}


def tokens(batch) -> int:
    return int(batch["encoder_attention_mask"].sum())


def measure_memory(args, variant: str) -> float:
    """Peak memory (MiB) of the steps of one variant, measured in a fresh process."""
    cmd = [sys.executable, __file__, "--_memory-worker", variant, "--model-name-or-path", args.model_name_or_path,
           "--corpus", args.corpus, "--batch-size", str(args.batch_size), "--max-seq-length", str(args.max_seq_length),
           "--steps", "2", "--warmup", "0", "--precision", args.precision, "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def memory_worker(args, variant: str) -> None:
    """Run the steps of one variant in this (fresh) process and print its peak step memory."""
    import gc

    import torch

    device = torch.device(args.device)
    batches = make_batches(args)
    step = make_steps(args, device, only=variant)[variant]
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        with open("/proc/self/clear_refs", "w") as f:  # reset the kernel's peak-RSS mark (VmHWM) to now
            f.write("5")
        base = _status_mib("VmRSS")
    for batch in batches:
        step(batch)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _status_mib("VmHWM")) - base
    print(json.dumps({"variant": variant, "peak_mib": round(peak, 1)}))


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError(f"/proc/self/status has no {field}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-name-or-path", default="default")
    parser.add_argument("--corpus", default="default")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps per variant first")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    add_report_args(parser)
    parser.add_argument("--_memory-worker", dest="memory_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        return memory_worker(args, args.memory_worker)

    import torch

    device = torch.device(args.device)
    batches = make_batches(args)
    steps = make_steps(args, device)
    times = {"mlm": [], "dupmae": []}
    cpu = {"mlm": [], "dupmae": []}  # process CPU seconds: less sensitive to other load on the machine
    for i, batch in enumerate(batches):
        for name in ("mlm", "dupmae") if i % 2 == 0 else ("dupmae", "mlm"):
            c = time.process_time()
            with Timer() as wall:
                steps[name](batch)
            if i >= args.warmup:
                times[name].append(wall.seconds)
                cpu[name].append(time.process_time() - c)
    ntok = statistics.mean(tokens(b) for b in batches[args.warmup:])
    sec = {k: statistics.median(v) for k, v in times.items()}
    cpu_sec = {k: statistics.median(v) for k, v in cpu.items()}
    result = {
        "device": str(device), "threads": torch.get_num_threads(), "precision": args.precision,
        "backbone": args.model_name_or_path, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
        "steps": args.steps, "tokens_per_batch": ntok,
        "sec_per_step": {k: round(v, 3) for k, v in sec.items()},
        "tokens_per_s": {k: round(ntok / v, 1) for k, v in sec.items()},
        "time_ratio_dupmae_over_mlm": round(sec["dupmae"] / sec["mlm"], 3),
        "cpu_sec_per_step": {k: round(v, 3) for k, v in cpu_sec.items()},
        "cpu_time_ratio_dupmae_over_mlm": round(cpu_sec["dupmae"] / cpu_sec["mlm"], 3),
    }
    if not args.no_memory:
        mem = {v: measure_memory(args, v) for v in ("mlm", "dupmae")}
        result["peak_step_memory_mib"] = mem
        result["memory_ratio_dupmae_over_mlm"] = round(mem["dupmae"] / mem["mlm"], 3)
    print(json.dumps(result, indent=2))
    summary = (f"DupMAE step / plain MLM step: {result['time_ratio_dupmae_over_mlm']:.2f}x wall time, "
               f"{result['cpu_time_ratio_dupmae_over_mlm']:.2f}x CPU time"
               + (f", {result['memory_ratio_dupmae_over_mlm']:.2f}x peak memory" if not args.no_memory else "")
               + " (authors' code: 1.80x time; target <= 1.6x)")
    print(summary)
    if args.report:
        write_report(args.report, _report(args, result, summary))


def _report(args, result: dict, summary: str) -> str:
    """The result as a Markdown report: one row per measure, plain MLM against DupMAE."""
    def row(name, key, fmt):
        a, b = result[key]["mlm"], result[key]["dupmae"]
        return (name, fmt.format(a), fmt.format(b), f"{b / a:.2f}x")

    rows = [row(f"CPU seconds per step (median of {args.steps})", "cpu_sec_per_step", "{:.2f}"),
            row("wall seconds per step", "sec_per_step", "{:.2f}"),
            row("tokens/s (wall)", "tokens_per_s", "{:.1f}")]
    if "peak_step_memory_mib" in result:
        rows.append(row("peak memory of a step (MiB)", "peak_step_memory_mib", "{:.0f}"))
    what = (f"One DupMAE pre-training step against a plain masked-LM step of `{portable(args.model_name_or_path)}` "
            f"on `{portable(args.corpus)}` (`bench/pretrain.py`): batch {args.batch_size}, length "
            f"{args.max_seq_length}, {args.precision}, {result['device']}, {result['threads']} threads, "
            f"{result['tokens_per_batch']:.0f} real tokens per batch.")
    return (header("Pre-training step: DupMAE against plain masked LM", what) + "\n"
            + "\n".join(markdown_table(["", "plain MLM", "DupMAE", "ratio"], rows)) + "\n\n" + summary)


if __name__ == "__main__":
    main()
