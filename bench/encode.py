"""Benchmark: DupMAE one-pass encoding (FAISS + Lucene impact index) vs stock Pyserini dense-only.

    python bench/encode.py [--docs 512] [--dtypes fp32,int8-head,int8] [--corpus ../shared/data/beir/scifact]

Encodes the same SciFact slice, in one run, with
- ``python -m dupmae_ir.encode`` (both representations, both indexes, one forward pass), per dtype;
- ``python -m pyserini.encode`` (via ``python -m dupmae_ir.pyserini encode``; dense only,
  ``--encoder-class auto --pooling cls --dimension 384``, same checkpoint, batch size, max length),
and prints wall-clock docs/s of each (start-up included for both), the ratio ours / Pyserini, peak
RSS of each process and the index sizes. Timings vary with machine load: compare within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.decode(errors='replace')[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--docs", type=int, default=512, help="slice size (first N documents)")
    ap.add_argument("--dtypes", default="auto,int8-head,int8", help="dtypes for dupmae_ir.encode, comma-separated")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.java import java_env
    from dupmae_ir.modeling.backbone import resolve_model_path

    env = java_env({**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)})
    checkpoint = resolve_model_path("default")
    tmp = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    corpus = tmp / "corpus" / "docs.jsonl"
    corpus.parent.mkdir()
    with open(corpus, "w", encoding="utf-8") as f:
        for i, d in enumerate(resolve(args.corpus).iter_docs()):
            if i == args.docs:
                break
            f.write(json.dumps({"id": d.id, "text": doc_text(d)}) + "\n")  # same text for both tools
    n = args.docs
    rows = []
    wall, rss = run([sys.executable, "-m", "pyserini.encode",
                     "input", "--corpus", str(corpus.parent), "--fields", "text",
                     "output", "--embeddings", str(tmp / "pyserini"), "--to-faiss",
                     "encoder", "--encoder", checkpoint, "--encoder-class", "auto", "--pooling", "cls",
                     "--fields", "text", "--dimension", "384", "--device", "cpu",
                     "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)], env)
    base = n / wall
    rows.append(("pyserini.encode (dense only, fp32)", wall, n / wall, 1.0, rss, du(tmp / "pyserini")))
    for dtype in args.dtypes.split(","):
        out = tmp / f"dupmae_{dtype}"
        wall, rss = run([sys.executable, "-m", "dupmae_ir.encode", "--corpus", str(corpus), "--output", str(out),
                         "--encoder", "default", "--dtype", dtype, "--batch-size", str(args.batch_size),
                         "--no-progress"], env)
        meta = json.loads((out / "dupmae_index.json").read_text())
        rows.append((f"dupmae_ir.encode (dense + impact, {meta['dtype']}; encode-only "
                     f"{meta['encode_docs_per_s']} docs/s)", wall, n / wall, (n / wall) / base, rss,
                     du(out / "dense") + du(out / "impact")))
    print(f"\nSciFact slice: {n} docs, batch {args.batch_size}, max length {args.max_length}, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print(f"{'tool':<78} {'wall s':>8} {'docs/s':>8} {'ratio':>6} {'RSS MiB':>8} {'index MiB':>9}")
    for name, wall, rate, ratio, rss, size in rows:
        print(f"{name:<78} {wall:8.1f} {rate:8.1f} {ratio:6.2f} {rss:8.0f} {size:9.1f}")
    print(f"\n(outputs in {tmp})")


if __name__ == "__main__":
    main()
