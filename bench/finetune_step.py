"""Benchmark: one fine-tuning step (forward + backward) with the fused bag-of-words head against plain
autograd, and the fused step in bf16 and without dropout, same model, same batch, same run.

    python bench/finetune_step.py [--model default] [--groups 2,8] [--steps 4] [--batch-size 16] [--report FILE]
    python bench/finetune_step.py --groups 8 --variants autograd,fused,fused-nodrop,fused-bf16,fused-bf16-nodrop

What is timed is the step of ``python -m dupmae_ir.finetune`` (stage 1 loss with ``--part-loss-weight 1``,
the recipe's default): 16 SciFact train queries (32 pieces) against their positive and G-1 other
SciFact documents each (128 pieces), in-batch negatives included, dropout on, after the recipe's
``--sparse-calibration 0.02``. Two routes through the MLM head (``PoolingPlan.fused``):

- ``autograd`` (the peer): ``bow.max_pool_head``, the logits of each block of positions kept for the
  backward, which runs the two (B*L, V) x (V, D) products of the decoder;
- ``fused`` (what training runs): ``bow.max_pool_linear_with_mlm``, the logits never kept, the bias
  added after the max, and the max's gradient index-added for the active entries only.

Each step re-seeds torch, so both routes see the same dropout masks; the script prints the loss and
gradient-norm differences between the routes (they must agree to float noise) and the median seconds
per step over ``--steps`` steps after one warm-up step, with the ratio.

``--variants`` adds what ``--precision bf16`` (autocast; fast only where the CPU has native bf16) and
``--dropout 0`` change: ``fused-bf16``, ``fused-nodrop``, ``fused-bf16-nodrop``, each timed against the
first variant. Their losses differ from fp32 with dropout by design (no dropout noise; bf16 rounding).
"""
from __future__ import annotations

import argparse
import random
import statistics

from _harness import Timer, add_report_args, header, markdown_table, portable, write_report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="Checkpoint to fine-tune (default: the offline MiniLM-L6).")
    p.add_argument("--groups", default="2,8", help="Comma-separated group sizes (1 positive + G-1 negatives).")
    p.add_argument("--steps", type=int, default=4, help="Timed steps per route and group (after one warm-up).")
    p.add_argument("--batch-size", type=int, default=16, help="Queries per step.")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    p.add_argument("--variants", default="autograd,fused",
                   help="Comma-separated: autograd | fused, optionally with -bf16 and/or -nodrop (fused only).")
    add_report_args(p)
    args = p.parse_args(argv)

    import torch

    from dupmae_ir.data import doc_text, iter_corpus, load_qrels, load_queries
    from dupmae_ir.modeling.biencoder import BiEncoderForTraining
    from dupmae_ir.modeling.calibration import calibrate_sparse
    from dupmae_ir.modeling.model import DupMAEModel, PoolingPlan
    from dupmae_ir.train.trainer import set_dropout

    if args.threads:
        torch.set_num_threads(args.threads)
    docs = {d.id: doc_text(d) for d in iter_corpus("default")}
    queries, qrels = load_queries("default", "train"), load_qrels("default", "train")
    rng = random.Random(0)
    qids = rng.sample(sorted(q for q in qrels if q in queries), args.batch_size)
    doc_ids = sorted(docs)
    setting = (f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size} queries, "
               f"32 / 128 pieces; {args.steps} timed steps after 1 warm-up")
    print(setting, flush=True)
    table, notes = [], []  # the report's rows and its lines under the table
    variants = args.variants.split(",")
    for v in variants:
        parts = v.split("-")
        if parts[0] not in ("autograd", "fused") or not set(parts[1:]) <= {"bf16", "nodrop"} or \
                (parts[0] == "autograd" and len(parts) > 1):
            p.error(f"--variants: {v!r}; use autograd, fused, fused-bf16, fused-nodrop or fused-bf16-nodrop")
    width = max(9, *(len(v) for v in variants))
    print(f"{'group':>5} {'variant':>{width}} {'s/step':>8} {'fwd':>6} {'bwd':>6} {'loss':>10} "
          f"{'grad norm':>12}", flush=True)
    for group in [int(g) for g in args.groups.split(",")]:
        batch_docs = []
        for q in qids:
            batch_docs.append(docs[next(iter(qrels[q]))])
            batch_docs += [docs[d] for d in rng.sample(doc_ids, group - 1)]
        results = {}
        for variant in variants:
            parts = variant.split("-")
            retriever, tok = DupMAEModel.from_pretrained(args.model)
            calibrate_sparse(retriever, tok, [docs[d] for d in doc_ids[:256]], 0.02, 128)
            if "nodrop" in parts:
                set_dropout(retriever, 0.0)  # what --dropout 0 does
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in parts)  # --precision bf16
            model = BiEncoderForTraining(retriever, group, part_loss_weight=1.0,
                                         pooling=PoolingPlan(fused=parts[0] == "fused"))
            model.train()
            q = tok([queries[i] for i in qids], max_length=32, truncation=True, padding=True, return_tensors="pt")
            d = tok(batch_docs, max_length=128, truncation=True, padding=True, return_tensors="pt")
            times, loss, norm = [], None, None
            for step in range(args.steps + 1):
                torch.manual_seed(step)  # the same dropout masks on both routes
                with Timer() as forward, autocast:
                    out = model(q["input_ids"], q["attention_mask"], d["input_ids"], d["attention_mask"])
                with Timer() as backward:
                    out["loss"].backward()
                if step == 0:
                    loss = float(out["loss"].detach())
                    norm = float(sum(float(p.grad.norm()) ** 2
                                     for p in model.parameters() if p.grad is not None) ** 0.5)
                else:
                    times.append((forward.seconds + backward.seconds, forward.seconds, backward.seconds))
                model.zero_grad(set_to_none=True)
            total, fwd, bwd = (statistics.median(t[i] for t in times) for i in range(3))
            results[variant] = (total, loss, norm)
            print(f"{group:>5} {variant:>{width}} {total:>8.2f} {fwd:>6.2f} {bwd:>6.2f} {loss:>10.4f} "
                  f"{norm:>12.4f}", flush=True)
            table.append((group, variant, f"{total:.2f}", f"{fwd:.2f}", f"{bwd:.2f}", f"{loss:.4f}", f"{norm:.4f}"))
        if "autograd" in results and "fused" in results:
            (ta, la, na), (tf, lf, nf) = results["autograd"], results["fused"]
            notes.append(f"group {group}: fused step {ta / tf:.2f}x faster than autograd; |loss diff| "
                         f"{abs(la - lf):.1e}, grad-norm rel. diff {abs(na - nf) / na:.1e}")
            print(notes[-1], flush=True)
        first = variants[0]
        for v in variants[1:]:
            if v != "fused" or first != "autograd":
                notes.append(f"group {group}: {v} step {results[first][0] / results[v][0]:.2f}x faster than {first}")
                print(notes[-1], flush=True)
    if args.report:
        body = markdown_table(["group", "variant", "s/step (median)", "forward s", "backward s", "loss", "grad norm"],
                              table)
        write_report(args.report, header("One fine-tuning step: fused bag-of-words head, dropout, bf16",
                                         f"`bench/finetune_step.py` on `{portable(args.model)}`: {setting}.")
                     + "\n" + "\n".join(body) + "\n\n" + "\n".join(f"- {n}" for n in notes))


if __name__ == "__main__":
    main()
