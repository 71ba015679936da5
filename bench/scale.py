"""Benchmark: the whole path at 10k, 100k and 1M documents, to see what grows faster than the corpus.

    python bench/scale.py [--sizes 10000,100000,1000000] [--work /tmp/dupmae-scale] [--report eval/scale.md]

Reproducible synthetic corpora: each document joins sentences sampled (seeded) from the bundled
SciFact until it has ~60 word pieces; 1,000 queries are sentences of known documents (the qrels).
The model is small in width and in vocabulary, since the bag-of-words head costs tokens x vocabulary
whatever the width: a ~2k-piece WordPiece trained on the SciFact corpus with ``tokenizers`` and a
2-layer, 64-wide random BERT (a throughput model: its rankings mean nothing). For each size, one
process each, as a user runs them: ``dupmae_ir.encode`` (both indexes), then ``dupmae_ir.search`` of
the 1,000 queries in every mode; reports the encoding stage's docs/s, the index build, the whole
encode's time per document, peak RSS of the encode process and of its largest child (Anserini),
index sizes, search queries/s and the nDCG@10 of the runs. Each size's row is kept in
``--work/result-SIZE.json`` and reused by later runs (``--fresh`` measures again), so sizes can be
measured in separate sessions.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from pathlib import Path

from _harness import ROOT, add_report_args, du, header, run_measured, write_report

PIECES = 60
VOCAB = 2048


def _mib(value) -> str:
    """A MiB figure, '-' where none was measured."""
    return "-" if value is None else f"{value:.0f}"


def build_model(work: Path) -> Path:
    """A 2k WordPiece vocabulary trained on SciFact and a 2-layer, 64-wide random BERT masked LM."""
    out = work / "model"
    if (out / "dupmae_config.json").is_file():
        return out
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.modeling.model import DupMAEModel, RepresentationConfig

    texts = [doc_text(d) for d in resolve("default").iter_docs()]
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=VOCAB, min_frequency=2)
    (work / "vocab").mkdir(parents=True, exist_ok=True)
    wp.save_model(str(work / "vocab"))
    tokenizer = BertTokenizer(vocab=str(work / "vocab" / "vocab.txt"), do_lower_case=True)  # fast (tokenizers)
    assert len(tokenizer) == VOCAB, len(tokenizer)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=128)
    model = DupMAEModel(BertForMaskedLM(cfg), RepresentationConfig(doc_max_length=96, query_max_length=32,
                                                                  doc_topk=64, query_topk=64))
    model.save_pretrained(out, tokenizer=tokenizer)
    return out


def build_corpus(work: Path, size: int, tokenizer) -> tuple[Path, Path, Path]:
    """``docs.jsonl`` of ``size`` documents, 1,000 topics and their qrels (seeded, reproducible)."""
    folder = work / f"corpus-{size}"
    docs, topics, qrels = folder / "docs.jsonl", folder / "topics.tsv", folder / "qrels.txt"
    if qrels.is_file():
        return docs, topics, qrels
    from dupmae_ir.data import doc_text, resolve

    sentences = [s for d in resolve("default").iter_docs() for s in re.split(r"(?<=[.!?])\s+", doc_text(d))
                 if len(s.split()) >= 5]
    lengths = [len(x) - 2 for x in tokenizer(sentences)["input_ids"]]
    rng = random.Random(size)
    folder.mkdir(parents=True, exist_ok=True)
    query_docs = set(rng.sample(range(size), min(1000, size)))
    with open(docs, "w", encoding="utf-8") as fd, open(topics, "w") as ft, open(qrels, "w") as fq:
        for i in range(size):
            parts, n = [], 0
            while n < PIECES:
                j = rng.randrange(len(sentences))
                parts.append(j)
                n += lengths[j]
            fd.write(json.dumps({"id": f"d{i}", "contents": " ".join(sentences[j] for j in parts)}) + "\n")
            if i in query_docs:
                ft.write(f"q{i}\t{sentences[parts[0]]}\n")
                fq.write(f"q{i} 0 d{i} 1\n")
    return docs, topics, qrels


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--work", default="/tmp/dupmae-scale")
    add_report_args(p)
    p.add_argument("--fresh", action="store_true", help="measure every size again (default: reuse result-SIZE.json)")
    args = p.parse_args()

    from dupmae_ir.modeling.backbone import load_tokenizer
    from dupmae_ir.runs import read_trec, score_run

    work = Path(args.work)
    model = build_model(work)
    tokenizer = load_tokenizer(model)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        done = work / f"result-{size}.json"
        if done.is_file() and not args.fresh:  # measured earlier with the same corpus and model: reuse the row
            rows.append(json.loads(done.read_text()))
            print(json.dumps(rows[-1]), flush=True)
            continue
        docs, topics, qrels = build_corpus(work, size, tokenizer)
        index = work / f"index-{size}"
        wall, rss, _ = run_measured([sys.executable, "-m", "dupmae_ir.encode", "--corpus", docs, "--encoder", model,
                                     "--output", index, "--dtype", "fp32", "--batch-size", 128, "--no-progress",
                                     "--overwrite"], env)
        meta = json.loads((index / "dupmae_index.json").read_text())
        runs = work / f"runs-{size}"
        s_wall, s_rss, err = run_measured([sys.executable, "-m", "dupmae_ir.search", "--index", index, "--topics",
                                           topics, "--mode", "dense", "impact", "hybrid", "--threads", 2,
                                           "--output", runs / "{mode}.trec", "--overwrite"], env)
        qps = re.search(r"\(([\d.]+) q/s; set-up ([\d.]+) s\)", err)
        judged = {}
        for line in qrels.read_text().splitlines():
            q, _, d, r = line.split()
            judged.setdefault(q, {})[d] = int(r)
        ndcg = {m: score_run(read_trec(runs / f"{m}.trec"), judged, ("nDCG@10",)).values["nDCG@10"]
                for m in ("dense", "impact", "hybrid")}
        rows.append(dict(size=size, encode_docs_s=meta["encode_docs_per_s"], build_s=meta["build_seconds"],
                         lucene_s=meta["impact"]["seconds"], wall=wall, us_per_doc=1e6 * wall / size, rss=rss,
                         child_rss=meta["impact"]["anserini_peak_rss_mib"], search_rss=s_rss,
                         empty_impact=meta["empty_impact_docs"],
                         dense_mib=du(index / "dense"), impact_mib=du(index / "impact"),
                         faiss_mib=(index / "dense" / "index").stat().st_size / 2**20,
                         qps=float(qps.group(1)) if qps else None, setup=float(qps.group(2)) if qps else None,
                         search_wall=s_wall, **{f"ndcg_{m}": v for m, v in ndcg.items()}))
        done.write_text(json.dumps(rows[-1]))
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| documents | encoding stage docs/s | index build s (Lucene) | whole encode s | us per doc | "
             "peak RSS MiB encode / Anserini / search | FAISS MiB | impact index MiB | "
             "search q/s (3 modes) | search set-up s | "
             "nDCG@10 dense / impact / hybrid |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']:,} | {r['encode_docs_s']:.0f} | {r['build_s']:.0f} ({r['lucene_s']:.0f}) | "
                     f"{r['wall']:.0f} | {r['us_per_doc']:.0f} | {r['rss']:.0f} / {_mib(r['child_rss'])} / "
                     f"{r['search_rss']:.0f} | {r['dense_mib']:.0f} | {r['impact_mib']:.0f} | {r['qps']} | "
                     f"{r['setup']} | {r['ndcg_dense']:.3f} / {r['ndcg_impact']:.3f} / {r['ndcg_hybrid']:.3f} |")
    text = "\n".join(lines)
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        mid = rows[-2]
        text += (f"\n\nTime per document, {last['size']:,} vs {first['size']:,}: "
                 f"{last['us_per_doc'] / first['us_per_doc']:.2f}x (target: within 1.2x). Peak RSS of the encode "
                 f"process at {last['size']:,}: {last['rss']:.0f} MiB against {mid['rss']:.0f} MiB at "
                 f"{mid['size']:,} plus the FAISS index's {last['faiss_mib'] - mid['faiss_mib']:.0f} MiB more: "
                 f"{last['rss'] / (mid['rss'] + last['faiss_mib'] - mid['faiss_mib']):.2f}x (target: within 1.2x).")
    print(text)
    if args.report:
        head = header("Scale: 10k to 1M documents", "The whole path on synthetic corpora of growing size "
                      "(`bench/scale.py`): encoding both indexes, searching 1,000 queries in every mode, "
                      "scoring. Model: 2 layers, 64 wide, a 2,048-piece WordPiece trained on SciFact "
                      "(random weights: throughput only).")
        write_report(args.report, head + "\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
