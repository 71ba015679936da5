"""Benchmark: the host side of encoding alone, the model replaced by a no-op.

    python bench/encode_host.py [--docs 4096] [--max-length 128] [--batch-size 128] [--report FILE --label L]

Runs ``dupmae_ir.encode.encode_corpus`` (reading, tokenising, padding, the model call, top-k and
quantisation, chunk files: dense ``.npy``, doc ids, impact JSONL) with a model that returns tensors of
the right shapes at no cost (dense (B, 384), bag-of-words (B, 30,522) from a fixed random table), and
reports the documents per second of that first stage (the index build is not timed). A GPU's forward
pass runs ~7,600 docs/s for MiniLM in bf16 (eval/gpu-h200-session1.md): the host must beat that per
process for the GPU to be the bottleneck. The tokeniser alone is timed as a reference.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _harness import Timer, add_report_args, add_table_row, machine


class NoOpModel:
    """Stands in for ``DupMAEModel``: right-shaped outputs, no computation."""

    def __init__(self, model, max_batch: int):
        import torch

        self.config, self.mlm, self.projection = model.config, model.mlm, None
        self.dense_dim = model.dense_dim
        generator = torch.Generator().manual_seed(0)
        self.bow = torch.rand(max_batch, model.mlm.config.vocab_size, generator=generator)  # (B, V)
        self.dense = torch.zeros(max_batch, self.dense_dim)  # (B, d)

    def to(self, device):
        return self

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask, pooling=None):
        b = input_ids.shape[0]
        return self.dense[:b], self.bow[:b]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=4096)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--label", default="this commit")
    add_report_args(p, help="add a row to this Markdown report's table")
    args = p.parse_args()

    import torch

    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.encode import encode_corpus
    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.provenance import git_commit

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="bench_host_"))
    corpus = tmp / "docs.jsonl"
    docs = list(resolve("default").iter_docs())
    with open(corpus, "w", encoding="utf-8") as f:
        for i in range(args.docs):
            d = docs[i % len(docs)]
            f.write(json.dumps({"id": f"{d.id}-{i}", "contents": doc_text(d)}) + "\n")
    texts = [doc_text(docs[i % len(docs)]) for i in range(args.docs)]

    enc = DupMAEEncoder("default", dtype="fp32")
    enc.config.doc_max_length = args.max_length
    with Timer() as t:
        enc.tokenize(texts, args.max_length)
    tokenise = args.docs / t.seconds
    enc.model = NoOpModel(enc.model, args.batch_size)
    encode_corpus(corpus, tmp / "index", encoder=enc, batch_size=args.batch_size, chunk_size=args.chunk_size,
                  progress=False)
    meta = json.loads((tmp / "index" / "dupmae_index.json").read_text())
    rate = args.docs / meta["wall_seconds_encode"]
    m = machine()
    row = (f"| {args.label} | {git_commit()} | {rate:.0f} | {tokenise:.0f} | {args.docs} | {args.max_length} | "
           f"{args.batch_size} | {m.get('cpu')}, {m.get('cores')} cores |")
    print(f"host pipeline: {rate:.0f} docs/s (tokeniser alone {tokenise:.0f} docs/s)")
    if args.report:
        add_table_row(args.report, row, ["| code | commit | host pipeline docs/s | tokeniser alone docs/s | docs | "
                                         "max length | batch | machine |", "|---|---|---|---|---|---|---|---|"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
