"""Benchmark: DupMAE one-pass encoding into both indexes against Pyserini's two passes, and the roofline.

    python bench/encode.py --encoder CKPT [--docs 512] [--dtypes fp32,bf16] [--max-length N]
                           [--corpus default] [--report eval/encode-peers.md]

Encodes the same slice of the collection, in one run, into a FAISS index and a Lucene impact index:

- Pyserini's way, two passes over the same checkpoint: ``python -m pyserini.encode`` dense
  (``--encoder-class auto --pooling cls --to-faiss``), then ``python -m pyserini.encode`` with its
  SPLADE-class impact encoder (``--encoder-class splade``: the masked-LM logits max-pooled, written as
  JSONL), then ``python -m pyserini.index.lucene --impact --pretokenized`` (fp32: Pyserini's CPU path);
- ``python -m dupmae_ir.encode`` (dense vector and impacts from one forward pass, both indexes), per dtype.

Every figure is wall-clock for the whole command, start-up included. The roofline is this machine's
matmul rate (2,048-square, the best product measured before and after the commands) divided by the
FLOPs of the slice's real token counts (encoder + the vocabulary head, from the model's config);
``encoding stage`` is the rate ``dupmae_ir.encode`` records for its model stage alone. Compare within
one run: timings move with load.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _harness import ROOT, Timer, add_report_args, du, header, portable, run_measured, write_report


def matmul_gflops(dtype, n: int = 2048, reps: int = 8) -> float:
    """This machine's dense matmul rate (GFLOP/s) at ``dtype`` with torch's threads: the best of ``reps``
    timed products (a ceiling; the rate of a shared VM moves by ~15% from minute to minute)."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        with Timer() as t:
            a @ b
        best = min(best, t.seconds)
    return 2 * n**3 / best / 1e9


def flops_per_doc(config, lengths: list[int]) -> float:
    """Mean FLOPs per document of the encoder plus the vocabulary head (2 per multiply-add)."""
    h, i, layers, v = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    total = 0.0
    for n in lengths:
        per_layer = 2 * (4 * h * h + 2 * h * i) + 4 * n * h  # projections, FFN, attention scores and mix
        total += n * (layers * per_layer + 2 * h * h + 2 * h * v)  # + head transform and projection
    return total / len(lengths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", required=True, help="a DupMAE checkpoint (masked-LM head included)")
    ap.add_argument("--corpus", default="default")
    ap.add_argument("--docs", type=int, default=512, help="slice size (first N documents)")
    ap.add_argument("--dtypes", default="fp32,bf16", help="dtypes for dupmae_ir.encode, comma-separated")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=None, help="document length (default: the checkpoint's)")
    ap.add_argument("--threads", type=int, default=2)
    add_report_args(ap)
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoTokenizer

    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.java import java_env
    from dupmae_ir.modeling.backbone import resolve_model_path
    from dupmae_ir.modeling.model import RepresentationConfig

    torch.set_num_threads(args.threads)
    checkpoint = resolve_model_path(args.encoder)
    length = args.max_length or RepresentationConfig.load(checkpoint).doc_max_length
    env = java_env({**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT),
                    "OMP_NUM_THREADS": str(args.threads)})
    tmp = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    corpus = tmp / "corpus" / "docs.jsonl"
    corpus.parent.mkdir()
    texts = []
    with open(corpus, "w", encoding="utf-8") as f:
        for i, d in enumerate(resolve(args.corpus).iter_docs()):
            if i == args.docs:
                break
            texts.append(doc_text(d))
            f.write(json.dumps({"id": d.id, "text": texts[-1]}) + "\n")  # same text for both tools
    n = len(texts)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=length)["input_ids"]]
    model_config = AutoConfig.from_pretrained(checkpoint)
    flops = flops_per_doc(model_config, lengths)
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    roofline = {k: v * 1e9 / flops for k, v in peak.items()}  # docs/s

    common = ["--fields", "text", "--device", "cpu", "--batch-size", str(args.batch_size), "--max-length", str(length)]
    steps = [
        ("pyserini.encode dense (auto, [CLS]) -> FAISS",
         [sys.executable, "-m", "pyserini.encode", "input", "--corpus", str(corpus.parent), "--fields", "text",
          "output", "--embeddings", str(tmp / "py_dense"), "--to-faiss",
          "encoder", "--encoder", checkpoint, "--encoder-class", "auto", "--pooling", "cls", *common,
          "--dimension", str(model_config.hidden_size)],
         tmp / "py_dense"),
        ("pyserini.encode impact (splade) -> JSONL",
         [sys.executable, "-m", "pyserini.encode", "input", "--corpus", str(corpus.parent), "--fields", "text",
          "output", "--embeddings", str(tmp / "py_vectors"),
          "encoder", "--encoder", checkpoint, "--encoder-class", "splade", *common], None),
        ("pyserini.index.lucene --impact",
         [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection", "--input",
          str(tmp / "py_vectors"), "--index", str(tmp / "py_impact"), "--generator", "DefaultLuceneDocumentGenerator",
          "--threads", str(args.threads), "--impact", "--pretokenized"], tmp / "py_impact"),
    ]
    rows, peer_wall, peer_rss, peer_size = [], 0.0, 0.0, 0.0
    for name, cmd, out in steps:
        wall, rss, _ = run_measured(cmd, env)
        peer_wall, peer_rss = peer_wall + wall, max(peer_rss, rss)
        peer_size += du(out) if out else 0.0
        rows.append((f"  {name}", wall, n / wall, None, None, rss, du(out) if out else None))
    peer = n / peer_wall
    rows.append(("**Pyserini, two passes + impact indexing (fp32)**", peer_wall, peer, 1.0, None, peer_rss, peer_size))
    for dtype in args.dtypes.split(","):
        out = tmp / f"dupmae_{dtype}"
        wall, rss, _ = run_measured([sys.executable, "-m", "dupmae_ir.encode", "--corpus", corpus, "--output", out,
                                     "--encoder", checkpoint, "--dtype", dtype, "--batch-size", args.batch_size,
                                     "--doc-max-length", length, "--no-progress"], env)
        after = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}  # the same minutes
        peak = {k: max(peak[k], after[k]) for k in peak}  # the higher: the roofline is a ceiling
        roofline = {k: v * 1e9 / flops for k, v in peak.items()}
        meta = json.loads((out / "dupmae_index.json").read_text())
        rows.append((f"**dupmae_ir.encode, one pass, both indexes ({meta['dtype']})**", wall, n / wall,
                     (n / wall) / peer, (meta.get("encode_docs_per_s"), meta["dtype"]), rss,
                     du(out / "dense") + du(out / "impact")))
    rows = [(*r[:4], f"{r[4][0]} docs/s, {100 * r[4][0] / roofline.get(r[4][1], roofline['fp32']):.0f}% of roofline"
             if r[4] and r[4][0] else None, *r[5:]) for r in rows]  # shares against the final (highest) rate

    head = (f"{n} documents of `{portable(args.corpus)}` (mean {sum(lengths) / n:.0f} pieces at max length "
            f"{length}), checkpoint `{portable(args.encoder)}`, batch {args.batch_size}, {args.threads} threads, "
            f"load average at the end {os.getloadavg()[0]:.1f}. Matmul rate measured in this run (best product, "
            f"before the commands and after each dupmae_ir.encode): {peak['fp32']:.0f} GFLOP/s fp32, "
            f"{peak['bf16']:.0f} GFLOP/s bf16; {flops / 1e9:.1f} GFLOP per document (encoder + vocabulary head): "
            f"roofline {roofline['fp32']:.1f} docs/s fp32, {roofline['bf16']:.1f} docs/s bf16.")
    table = ["| command | wall s | docs/s | vs Pyserini | encoding stage (model alone) | peak RSS MiB | index MiB |",
             "|---|---|---|---|---|---|---|"]
    for name, wall, rate, ratio, share, rss, size in rows:
        table.append(f"| {name} | {wall:.1f} | {rate:.1f} | {'' if ratio is None else f'{ratio:.2f}x'} | "
                     f"{share or ''} | {rss:.0f} | {'' if size is None else f'{size:.1f}'} |")
    text = "\n".join([head, "", *table, ""])
    print(text)
    if args.report:
        write_report(args.report, header(
            "Encoding into both indexes: dupmae_ir's one pass against Pyserini's two passes",
            "Wall-clock docs/s of each command on the same slice, start-up included (`bench/encode.py`).")
                     + "\n" + text)
    print(f"(outputs in {tmp})")


if __name__ == "__main__":
    main()
