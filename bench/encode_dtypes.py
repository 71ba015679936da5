"""Benchmark: each ``--dtype`` of the DupMAE encoder on one device, its speed and its effect on rankings.

    python bench/encode_dtypes.py [--encoder default] [--device cpu|cuda] [--dtypes fp32,int8-head]
                                  [--collection default] [--max-length 256] [--runs-dir DIR] [--report FILE]

For each dtype the whole collection is encoded with :class:`dupmae_ir.inference.DupMAEEncoder` (the code
``python -m dupmae_ir.encode`` runs: length-sorted batches, one forward pass for the dense vector and
the quantised bag-of-words) and the test queries are searched exhaustively on the same device:
``dense`` (inner product), ``impact`` (the integer dot product a Lucene impact index computes) and
``hybrid`` (``dense + impact / (s_q * s_d)``, DupMAE's sum over all documents). The first dtype is the
reference: each other dtype is reported as its nDCG@10 change and its top-10 overlap against it.

The peer, timed in the same run at the same precision: the dense-only [CLS] encoding that stock
``python -m pyserini.encode --encoder-class auto --pooling cls`` runs (Hugging Face model, batches
in corpus order padded to their longest text), on the same model and device. It needs no Java, FAISS
or Pyserini, so this benchmark also runs on a GPU machine that has only torch and transformers;
nDCG needs ir-measures (skipped, with the runs still written, where it is missing).
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

from _harness import Timer, add_report_args, header, markdown_table, portable, write_report


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peer_dense(model, tokenizer, texts, max_length, batch_size, device, dtype) -> float:
    """Seconds to encode ``texts`` dense-only as Pyserini's AutoDocumentEncoder does (CLS pooling)."""
    import torch

    bert = model.mlm.bert
    autocast = dtype in (torch.float16, torch.bfloat16)
    with Timer(lambda: sync(device)) as t, torch.inference_mode(), \
            torch.autocast(device.split(":")[0], dtype=dtype if autocast else None, enabled=autocast):
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], max_length=max_length, padding="longest", truncation=True,
                            return_tensors="pt").to(device)
            bert(**enc).last_hidden_state[:, 0].float().cpu()  # (b, D)
    return t.seconds


def impact_matrix(impacts, vocab_index, device):
    """``[{token: int}]`` -> sparse CSR (n, V) float32 on ``device`` (integer values, exact in fp32)."""
    import torch

    crow, cols, vals = [0], [], []
    for row in impacts:
        cols.extend(vocab_index[t] for t in row)
        vals.extend(row.values())
        crow.append(len(cols))
    return torch.sparse_csr_tensor(torch.tensor(crow), torch.tensor(cols, dtype=torch.long),
                                   torch.tensor(vals, dtype=torch.float32),
                                   (len(impacts), len(vocab_index))).to(device)


def search(docs, doc_ids, queries, qids, vocab, alpha, device, k=100):
    """Exhaustive dense / impact / hybrid top-k of encoded ``queries`` (rows in ``qids`` order) over
    encoded ``docs`` -> ``{mode: {qid: [(docid, score), ...]}}``."""
    import torch

    vocab_index = {t: i for i, t in enumerate(vocab)}
    d_dense = torch.from_numpy(docs.dense).to(device)  # (N, d)
    q_dense = torch.from_numpy(queries.dense).to(device)  # (Q, d)
    d_imp = impact_matrix(docs.impacts, vocab_index, device)  # (N, V)
    q_imp = impact_matrix(queries.impacts, vocab_index, device).to_dense()  # (Q, V)
    scores = {"dense": q_dense @ d_dense.T}  # (Q, N)
    scores["impact"] = (d_imp @ q_imp.T).T  # (Q, N) integer dot products
    scores["hybrid"] = scores["dense"] + alpha * scores["impact"]
    runs = {}
    for mode, s in scores.items():
        top = s.topk(min(k, s.shape[1]), dim=1)
        runs[mode] = {q: [(doc_ids[j], float(v)) for v, j in zip(top.values[r].tolist(), top.indices[r].tolist())]
                      for r, q in enumerate(qids)}
    return runs


def overlap10(a, b) -> float:
    return sum(len({d for d, _ in a[q][:10]} & {d for d, _ in b[q][:10]}) / 10 for q in a) / len(a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="default", help="checkpoint folder, hub id or 'default'")
    ap.add_argument("--collection", default="default", help="collection (corpus + queries + qrels)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="fp32,int8-head",
                    help="comma-separated; the first is the reference; bf16:inexact skips the fp32 recompute of "
                         "the kept entries")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256, help="document word pieces")
    ap.add_argument("--limit", type=int, default=None, help="first N documents only (smoke runs)")
    ap.add_argument("--runs-dir", default=None, help="write each dtype's runs here (TREC, top 100)")
    ap.add_argument("--json", default=None, help="write the results table here")
    add_report_args(ap)
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.inference import DupMAEEncoder
    from dupmae_ir.precision import autocast_dtype
    from dupmae_ir.runs import write_trec

    coll = resolve(args.collection, data_dir=args.data_dir)
    docs = [d for _, d in zip(range(args.limit or 10**12), coll.iter_docs())]
    doc_ids, texts = [d.id for d in docs], [doc_text(d) for d in docs]
    qmap = coll.queries(args.split)
    qids = list(qmap)
    import importlib.util

    from dupmae_ir.runs import ndcg_recall

    qrels = coll.qrels(args.split) if importlib.util.find_spec("ir_measures") else None  # none on bare GPU hosts
    rows, ref_runs = [], None
    for name in args.dtypes.split(","):
        name, _, variant = name.partition(":")
        enc = DupMAEEncoder(args.encoder, device=args.device, dtype=name)
        if variant == "inexact":  # the kept entries' values stay in the low precision (no fp32 recompute)
            enc.pooling = replace(enc.pooling, exact_topk=0)
        enc.config = replace(enc.config, doc_max_length=args.max_length)
        enc.encode_docs(texts[:64], batch_size=args.batch_size)  # warm-up (kernels, allocator)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with Timer(lambda: sync(args.device)) as t:
            d = enc.encode_docs(texts, batch_size=args.batch_size)
        seconds = t.seconds
        peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
        q = enc.encode_queries([qmap[x] for x in qids], batch_size=args.batch_size)
        torch_dtype = autocast_dtype(enc.dtype) or torch.float32
        peer = peer_dense(enc.model, enc.tokenizer, texts, args.max_length, args.batch_size, args.device, torch_dtype)
        alpha = 1.0 / (enc.config.query_scale * enc.config.doc_scale)
        runs = search(d, doc_ids, q, qids, enc.vocab, alpha, args.device)
        row = {"dtype": enc.dtype_name + (":" + variant if variant else ""), "device": args.device,
               "docs": len(texts), "seconds": round(seconds, 2),
               "docs_per_s": round(len(texts) / seconds, 1), "peer_docs_per_s": round(len(texts) / peer, 1),
               "ratio": round(peer / seconds, 2), "peak_gpu_mib": round(peak) if peak else None,
               "terms_per_doc": round(sum(len(x) for x in d.impacts) / len(texts), 1)}
        if qrels is not None:
            for mode, run in runs.items():
                row[f"{mode}_ndcg10"] = ndcg_recall(run, qrels)["nDCG@10"]
        if ref_runs is None:
            ref_runs = runs
        else:
            for mode in runs:
                row[f"{mode}_top10_overlap"] = round(overlap10(runs[mode], ref_runs[mode]), 4)
        if args.runs_dir:
            for mode, run in runs.items():
                write_trec(Path(args.runs_dir) / f"{row['dtype'].replace(':', '-')}.{mode}.trec", run,
                           f"dupmae-{row['dtype'].replace(':', '-')}-{mode}")
        rows.append(row)
        print(json.dumps(row), flush=True)
        del enc
    if qrels is not None and len(rows) > 1:
        for row in rows[1:]:
            for mode in ("dense", "impact", "hybrid"):
                row[f"{mode}_delta"] = round(row[f"{mode}_ndcg10"] - rows[0][f"{mode}_ndcg10"], 4)
    print(f"\n{'dtype':10} {'docs/s':>8} {'peer':>8} {'ratio':>6}  "
          f"nDCG@10 dense / impact / hybrid (delta vs {rows[0]['dtype']})")
    scores = {}
    for row in rows:
        scores[row["dtype"]] = " / ".join(f"{row.get(f'{m}_ndcg10', float('nan')):.4f}"
                                          + (f" ({row[f'{m}_delta']:+.4f})" if f"{m}_delta" in row else "")
                                          for m in ("dense", "impact", "hybrid"))
        print(f"{row['dtype']:10} {row['docs_per_s']:8.1f} {row['peer_docs_per_s']:8.1f} {row['ratio']:6.2f}  "
              f"{scores[row['dtype']]}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.report:
        modes = ("dense", "impact", "hybrid")
        table = markdown_table(
            ["dtype", "docs/s", "peer docs/s", "ratio", f"nDCG@10 {' / '.join(modes)} (delta vs {rows[0]['dtype']})",
             f"top-10 overlap {' / '.join(modes)}", "impact terms per doc", "peak GPU MiB"],
            [(r["dtype"], f"{r['docs_per_s']:.1f}", f"{r['peer_docs_per_s']:.1f}", f"{r['ratio']:.2f}",
              scores[r["dtype"]], " / ".join(str(r.get(f"{m}_top10_overlap", "-")) for m in modes),
              r["terms_per_doc"], r["peak_gpu_mib"] or "-") for r in rows])
        what = (f"Each `--dtype` of the DupMAE encoder on `{args.device}`: {rows[0]['docs']:,} documents of "
                f"`{portable(args.collection)}` at {args.max_length} pieces, batch {args.batch_size}, encoder "
                f"`{portable(args.encoder)}`; the peer is the dense-only [CLS] encoding of stock `pyserini.encode` at "
                "the same precision, timed in the same run (`bench/encode_dtypes.py`).")
        write_report(args.report, header("Encoder dtypes: speed and effect on rankings", what) + "\n"
                     + "\n".join(table))


if __name__ == "__main__":
    main()
