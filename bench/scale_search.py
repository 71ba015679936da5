"""Search at 100k and 1M documents with a trained model's postings and vectors (issue 36, items 2-3).

    python bench/scale_search.py --model CKPT [--base 20000] [--sizes 100000,1000000]
        [--types flat-int8,hnsw-int8] [--ef-search 128,1024,2048] [--work encoders/scale-search]
        [--report eval/scale-search.md]

1. Base: ``--base`` synthetic documents (``bench/scale.py``'s corpus: SciFact sentences, ~60 pieces each)
   encoded once by the trained checkpoint with ``python -m dupmae_ir.encode`` (two shard folders, so that
   its chunk files stay).
2. Each size N = R x base is built by replication: R shard folders whose chunks are the base chunks
   under new ids (``d12`` in replica 0, ``d12-r3`` in replica 3). Impact rows are copied exactly; dense
   vectors of replicas 1.. get seeded Gaussian noise (``--noise`` x each dimension's standard deviation
   over the base) so that copies are near neighbours rather than exact ties. ``python -m dupmae_ir.encode
   merge`` builds the index from them (flat FAISS + Lucene impact), and again dense-only for each
   ``--types``; ``python -m dupmae_ir.bm25`` indexes the replicated texts with Pyserini.
3. At each size, one child process per measurement: ``bench/latency.py`` (BM25, dense flat, impact,
   hybrid: single-query p50/p99 and batched q/s; Lucene with and without top-k pruning) on the 300
   SciFact test queries (no judgments are read: their documents are not in this corpus), the postings
   a query's terms open, and each dense type's single-query p50/p99, batched q/s and recall@100/@1000
   against flat at each ``--ef-search``; then ``bench/latency.py`` again on the hybrid served with each HNSW
   type (flat's Lucene impact index beside its dense part) at the smallest efSearch whose recall@1000 of
   flat reaches 0.98 (else the largest measured); and per dense type the peak RSS of a process serving that
   hybrid (``DupMAESearcher`` opened, every query searched).

What replication keeps: each term's weight distribution and the share of documents holding it (document
frequency grows with N, so posting lists grow as they would), the vectors' distribution, BM25's idf
(df and N both grow R times). What it does not: new vocabulary, new topics (R near-copies of every
document make the neighbourhoods denser than a real corpus of N), realistic near-duplicate structure.
Every step is resumable: a finished index or measurement in ``--work`` is reused (``--fresh``: measure
again; indexes are kept).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import _harness
from _harness import ROOT, Timer, du
from scale import build_corpus

META = "dupmae_index.json"
RECALL = 0.98  # the served HNSW efSearch: the smallest measured whose recall@1000 of flat reaches this
TOPICS = "topics.tsv"


def child(cmd: list, log: Path) -> dict:
    """Run one command (its output to ``log``); wall seconds and peak RSS (MiB) of that process."""
    seconds, rss, _ = _harness.run_measured(cmd, log=log)
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(rss), "rss": "child alone"}


def base_shards(work: Path, model: Path, base: int, chunk_size: int, log: Path) -> tuple[list[Path], dict]:
    """The base corpus encoded as two shard folders (their chunk files are what replication copies)."""
    from dupmae_ir.modeling.backbone import load_tokenizer

    docs, _, _ = build_corpus(work, base, load_tokenizer(model))
    shards, cost = [work / "base" / f"shard-{i}" for i in (0, 1)], {}
    for i, shard in enumerate(shards):
        if not (shard / META).is_file():
            cost[f"shard {i}"] = child([sys.executable, "-m", "dupmae_ir.encode", "--corpus", docs, "--encoder", model,
                                        "--output", shard, "--shard-id", i, "--shard-num", 2, "--dtype", "fp32",
                                        "--chunk-size", chunk_size, "--no-progress"], log)
    metas = [json.loads((s / META).read_text()) for s in shards]
    docs_s = sum(m["docs"] for m in metas) / sum(m["encode_seconds"] for m in metas)
    return shards, {"docs": sum(m["docs"] for m in metas), "encode_docs_per_s": round(docs_s, 1), **cost}


def replicate(shards: list[Path], out: Path, copies: int, noise: float, seed: int = 0) -> list[Path]:
    """``copies`` shard folders under ``out`` holding the base chunks under new ids (see the module doc)."""
    import numpy as np

    base = [(s, json.loads((s / META).read_text())) for s in shards]
    names = sorted(((s, n) for s, m in base for n in m["chunk_names"]), key=lambda sn: sn[1])  # corpus order
    per_copy = len(names)
    vectors = np.concatenate([np.load(s / "chunks" / f"{n}.npy") for s, n in names])
    std = vectors.std(axis=0, keepdims=True).astype(np.float32)
    settings = {**base[0][1]["settings"], "shard_num": copies,
                "corpus": f"{base[0][1]['settings']['corpus']} x{copies} (bench/scale_search.py replication)"}
    counts = {k: sum(m[k] for _, m in base) for k in ("docs", "empty_text_docs", "empty_impact_docs")}
    folders = []
    for r in range(copies):
        folder = out / f"shard-{r}"
        folders.append(folder)
        if (folder / META).is_file():
            continue
        tmp = out / f".shard-{r}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # this script's own unfinished copy
        (tmp / "chunks" / "vectors").mkdir(parents=True)
        chunk_names = []
        for c, (src, name) in enumerate(names):
            new = f"{r * per_copy + c:07d}"
            chunk_names.append(new)
            ids = (src / "chunks" / f"{name}.docid").read_text(encoding="utf-8").splitlines()
            new_ids = ids if r == 0 else [f"{i}-r{r}" for i in ids]
            (tmp / "chunks" / f"{new}.docid").write_text("".join(i + "\n" for i in new_ids), encoding="utf-8")
            dense = np.load(src / "chunks" / f"{name}.npy")
            if r:
                rng = np.random.default_rng([seed, r, c])
                dense = dense + noise * std * rng.standard_normal(dense.shape, dtype=np.float32)
            np.save(tmp / "chunks" / f"{new}.npy", np.ascontiguousarray(dense, dtype=np.float32))
            lines = (src / "chunks" / "vectors" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
            with open(tmp / "chunks" / "vectors" / f"{new}.jsonl", "w", encoding="utf-8") as fh:
                for new_id, line in zip(new_ids, lines, strict=True):
                    fh.write('{"id": ' + json.dumps(new_id) + ', "contents"' + line.split(', "contents"', 1)[1] + "\n")
        meta = {"kind": "dupmae_shard", "settings": {**settings, "shard_id": r}, "chunk_names": chunk_names,
                "total_chunks": per_copy * copies, **counts}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        tmp.rename(folder)
    return folders


def dense_only(folders: list[Path], out: Path) -> list[Path]:
    """The same shards with ``impact: false``: a merge builds only the FAISS index (chunks linked, not copied)."""
    views = []
    for folder in folders:
        view = out / folder.name
        views.append(view)
        if (view / META).is_file():
            continue
        view.mkdir(parents=True, exist_ok=True)
        if not (view / "chunks").exists():
            os.symlink(folder.resolve() / "chunks", view / "chunks")
        meta = json.loads((folder / META).read_text())
        meta["settings"]["impact"] = False
        (view / META).write_text(json.dumps(meta, indent=1))
    return views


def hybrid_view(at: Path, kind: str) -> Path:
    """``index-hybrid-KIND``: the flat index's Lucene impact part beside the ``index-KIND`` dense part (the same
    documents in the same order), linked (relative links), not copied: the hybrid a user would serve at that size.
    Checked and written again on every call, so a rebuilt part is never served under stale metadata."""
    from dupmae_ir.provenance import atomic_write_text

    view = at / f"index-hybrid-{kind}"
    flat, dense = at / "index-flat", at / f"index-{kind}"
    if (flat / "dense" / "docid").read_bytes() != (dense / "dense" / "docid").read_bytes():
        raise SystemExit(f"{at}: index-flat and index-{kind} list other documents")
    view.mkdir(exist_ok=True)
    for part, source in (("impact", flat), ("dense", dense)):
        link, target = view / part, Path("..") / source.name / part
        if link.is_symlink() and Path(os.readlink(link)) != target:
            link.unlink()  # this bench's own link, pointing elsewhere (an older layout)
        if not link.is_symlink():
            if link.exists():
                raise SystemExit(f"{link}: not a link made by this bench; move it away")
            os.symlink(target, link)
    meta = json.loads((flat / META).read_text())
    meta["dense"] = json.loads((dense / META).read_text())["dense"]
    atomic_write_text(view / META, json.dumps(meta, indent=1))
    return view


def replicated_docs(docs: Path, out: Path, copies: int) -> Path:
    """The replicated texts with the same ids as the replicated vectors (for the BM25 index)."""
    if out.is_file():
        return out
    lines = docs.read_text(encoding="utf-8").splitlines()
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in range(copies):
            for line in lines:
                doc = json.loads(line)
                key = "_id" if "_id" in doc else "id"  # BEIR or Pyserini JSONL
                if r:
                    doc[key] = f"{doc[key]}-r{r}"
                fh.write(json.dumps(doc) + "\n")
    tmp.rename(out)
    return out


def write_topics(work: Path) -> Path:
    """The SciFact test queries as a topics file with no judgments (their documents are not in this corpus)."""
    from dupmae_ir.data import resolve

    path = work / TOPICS
    if not path.is_file():
        queries = resolve("default").queries("test")
        path.write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# measurements (each in its own process)
# ------------------------------------------------------------------------------------------------
def measure_dense(flat: Path, others: dict[str, Path], topics: Path, efs: list[int], single: int) -> dict:
    """Each dense index against flat on the same encoded queries: p50/p99 (one query at a time, 1 thread),
    batched q/s (2 threads), recall@100/@1000 of flat's top-k."""
    import faiss
    import numpy as np

    from dupmae_ir.data import resolve
    from dupmae_ir.dense_index import apply_search_knobs, index_kind
    from dupmae_ir.index import load_index
    from dupmae_ir.search import DupMAESearcher

    queries = resolve(str(topics)).queries(None)
    searcher = DupMAESearcher(flat, dtype="fp32")
    q = np.ascontiguousarray(searcher.encoder.encode_queries(list(queries.values())).dense, dtype=np.float32)
    del searcher

    def timed(index) -> dict:
        faiss.omp_set_num_threads(1)
        for i in range(min(5, len(q))):
            index.search(q[i:i + 1], 1000)
        times = []
        for i in range(min(single, len(q))):
            with Timer() as t:
                index.search(q[i:i + 1], 1000)
            times.append(1000 * t.seconds)
        faiss.omp_set_num_threads(2)
        with Timer() as t:
            _, ids = index.search(q, 1000)
        return {"p50_ms": _harness.percentile(times, 50), "p99_ms": _harness.percentile(times, 99),
                "batched_qps": len(q) / t.seconds, "ids": ids}

    flat_file = load_index(flat).dense / "index"
    index = faiss.read_index(str(flat_file))
    truth = timed(index)
    rows = [{"type": "flat", "ef_search": None, "mib": flat_file.stat().st_size / 2**20,
             **{k: v for k, v in truth.items() if k != "ids"}, "recall@100": 1.0, "recall@1000": 1.0}]
    del index

    def recall(ids, k: int) -> float:
        return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids, truth["ids"])]))

    for name, folder in others.items():
        info = load_index(folder)
        index = faiss.read_index(str(info.dense / "index"))
        kind = index_kind(index, info.meta)
        for ef in efs if "hnsw" in kind else [None]:
            apply_search_knobs(index, ef, None, info.dense / "index", kind)
            got = timed(index)
            rows.append({"type": name, "ef_search": ef, "mib": (info.dense / "index").stat().st_size / 2**20,
                         **{k: v for k, v in got.items() if k != "ids"},
                         "recall@100": recall(got["ids"], 100), "recall@1000": recall(got["ids"], 1000)})
        del index
    return {"queries": len(q), "rows": rows}


def measure_postings(index: Path, topics: Path) -> dict:
    """The postings a query's impact terms open: the sum of their document frequencies (mean, p50, p99 over
    the queries), and the mean terms per query, read from the Lucene index."""
    from dupmae_ir.data import resolve
    from dupmae_ir.search import DupMAESearcher

    queries = resolve(str(topics)).queries(None)
    searcher = DupMAESearcher(index, dtype="fp32")
    from jnius import autoclass  # after the searcher has started the JVM with the toolkit's options
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(searcher.info.impact)).reader  # Lucene's own: docFreq of the raw term
    term_class = autoclass("org.apache.lucene.index.Term")
    enc = searcher.encoder.encode_queries(list(queries.values()))
    df: dict[str, int] = {}
    opened = []
    for vector in enc.impacts:
        for term in vector:
            if term not in df:
                df[term] = reader.docFreq(term_class("contents", term))
        opened.append(sum(df[t] for t in vector))
    docs = searcher.impact_searcher.num_docs
    return {"docs": docs, "terms_per_query": sum(map(len, enc.impacts)) / len(enc.impacts),
            "postings_mean": sum(opened) / len(opened), "postings_p50": _harness.percentile(opened, 50),
            "postings_p99": _harness.percentile(opened, 99), "postings_share_of_docs": sum(opened) / len(opened) / docs}


def measure_searcher(index: Path, topics: Path, ef: int | None) -> dict:
    """Open the hybrid searcher a user would serve (model, JVM, Lucene impact, FAISS) and search every query in
    hybrid mode, top 1,000, in batches of 64: the process's peak RSS is the figure (taken by :func:`child`)."""
    from dupmae_ir.data import resolve
    from dupmae_ir.search import DupMAESearcher

    queries = resolve(str(topics)).queries(None)
    with Timer() as opened:
        searcher = DupMAESearcher(index, dtype="fp32", ef_search=ef)
    with Timer() as searched:
        runs = searcher.search_all(queries, modes=("hybrid",), hits=1000, progress=False)
    return {"queries": len(runs["hybrid"]), "dense_search": searcher.dense_search,
            "open_seconds": round(opened.seconds, 1), "search_seconds": round(searched.seconds, 1)}


def served_ef_search(dense: dict, kind: str) -> int | None:
    """The efSearch a type is served at: the smallest measured whose recall@1000 of flat reaches ``RECALL``, else
    the largest measured; None for types without one."""
    rows = sorted((r for r in dense["rows"] if r["type"] == kind and r["ef_search"]), key=lambda r: r["ef_search"])
    if not rows:
        return None
    return next((r["ef_search"] for r in rows if r["recall@1000"] >= RECALL), rows[-1]["ef_search"])


def run_child(args, kind: str, size: int, out: Path, log: Path, extra: list | None = None) -> dict:
    """A measurement in its own process, reused from ``out`` only if it was taken with the same parameters
    (types, efSearch values, query count, ``extra``); the process's seconds and peak RSS are kept beside the
    result as ``process``. The child writes ``out``'s ``.part``; ``out`` appears whole or not at all."""
    from dupmae_ir.provenance import atomic_write_text

    params = {"types": args.types, "ef_search": args.ef_search, "single": args.single,
              "extra": [str(e) for e in extra or []]}
    if out.is_file() and not args.fresh:
        done = json.loads(out.read_text())
        if done.get("params") == params:
            return done
    part = out.with_name(out.name + ".part")
    cmd = [sys.executable, __file__, "--child", kind, "--size", size, "--work", Path(args.work).resolve(),
           "--result", part, "--ef-search", args.ef_search, "--types", args.types, "--single", args.single,
           *(extra or [])]
    cost = child(cmd, log)
    result = {**json.loads(part.read_text()), "params": params, "process": cost}
    atomic_write_text(out, json.dumps(result, indent=1))
    part.unlink()
    return result


def build_size(args, work: Path, shards: list[Path], docs: Path, size: int) -> dict:
    """The replicated shards, the flat+impact index, one dense-only index per type and the BM25 index."""
    copies = size // args.base
    at = work / f"n{size}"
    at.mkdir(exist_ok=True)
    cost_file = at / "build.json"
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
    with Timer() as t:
        folders = replicate(shards, at / "shards", copies, args.noise)
    cost.setdefault("replicate", {"seconds": round(t.seconds, 1)})
    for name in ["flat", *args.types.split(",")]:
        out = at / f"index-{name}"
        if not (out / META).is_file():
            inputs = folders if name == "flat" else dense_only(folders, at / f"shards-{name}")
            cmd = [sys.executable, "-m", "dupmae_ir.encode", "merge", "--inputs", *inputs, "--threads", 2]
            graph = ["--ef-construction", args.ef_construction, "--hnsw-m", args.hnsw_m] if "hnsw" in name else []
            cost[f"merge {name}"] = child([*cmd, "--output", out, "--faiss", name, *graph], at / f"merge-{name}.log")
            cost[f"merge {name}"]["faiss_mib"] = round((out / "dense" / "index").stat().st_size / 2**20)
            if name == "flat":
                cost[f"merge {name}"]["impact_mib"] = round(du(out / "impact"))
                cost[f"merge {name}"]["lucene_seconds"] = json.loads((out / META).read_text())["impact"]["seconds"]
        cost_file.write_text(json.dumps(cost, indent=1))
    bm25 = at / "bm25"
    if not bm25.is_dir():
        texts = replicated_docs(docs, at / "docs.jsonl", copies)
        cost["bm25 index"] = child([sys.executable, "-m", "dupmae_ir.bm25", "--corpus", texts, "--index", bm25,
                                    "--threads", 2], at / "bm25.log")
        cost["bm25 index"]["mib"] = round(du(bm25))
        (at / "docs.jsonl").unlink()
    cost_file.write_text(json.dumps(cost, indent=1))
    return cost


def report(args, base: dict, sizes: dict) -> str:
    from _harness import markdown_table

    lines = [f"Base: {base['docs']:,} documents encoded by the checkpoint (fp32; its rate is not a figure of this "
             "report: eval/scale.md measures encoding). Sizes by replication (what it keeps: the module doc of "
             "`bench/scale_search.py`).",
             "", "### Builds", ""]
    rows = []
    for size, s in sizes.items():
        for step, c in s["build"].items():
            extra = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("seconds", "peak_rss_mib", "rss"))
            rss = c["peak_rss_mib"] if c.get("rss") == "child alone" else "-"
            rows.append([f"{size:,}", step, c["seconds"], rss, extra or "-"])
    lines += markdown_table(["documents", "step", "seconds", "peak RSS MiB", "other"], rows)
    lines += ["", "Peak RSS: of the build's process and the children it waited for (the Anserini indexer of the flat "
                  "merge, Pyserini's for BM25), not of this bench; '-' for a build measured before the bench measured "
                  "it so (a forked child's peak then started at the bench's own)."]
    lines += ["", "### Postings a query opens (impact index, the 300 SciFact test queries)", ""]
    lines += markdown_table(["documents", "terms per query", "postings per query: mean", "p50", "p99",
                             "mean / documents"],
                            [[f"{size:,}", f"{s['postings']['terms_per_query']:.1f}",
                              f"{s['postings']['postings_mean']:,.0f}", f"{s['postings']['postings_p50']:,}",
                              f"{s['postings']['postings_p99']:,}", f"{s['postings']['postings_share_of_docs']:.2f}"]
                             for size, s in sizes.items()])
    lines += ["", "### Dense index types against flat (FAISS alone, the same encoded queries)", ""]
    rows = []
    for size, s in sizes.items():
        flat = s["dense"]["rows"][0]
        for r in s["dense"]["rows"]:
            rows.append([f"{size:,}", r["type"], r["ef_search"] or "-", f"{r['mib']:.0f}", f"{r['p50_ms']:.2f}",
                         f"{r['p99_ms']:.2f}", f"{flat['p50_ms'] / r['p50_ms']:.1f}x", f"{r['batched_qps']:.0f}",
                         f"{r['recall@100']:.3f}", f"{r['recall@1000']:.3f}"])
    lines += markdown_table(["documents", "type", "efSearch", "index MiB", "single p50 ms", "p99 ms",
                             "speed-up over flat (p50)", "batched q/s (2 threads)", "recall@100 of flat",
                             "recall@1000 of flat"], rows)
    lines += ["", f"Single: {args.single} queries one at a time, 1 thread, top 1,000. Batched: all queries at "
                  "once, 2 threads. Recall: the share of flat's top-k in the type's top-k.", ""]
    lines += ["### The served searcher's memory", ""]
    lines += markdown_table(["documents", "dense type", "efSearch", "dense index MiB", "searcher peak RSS MiB",
                             "open s", "hybrid search s (queries)"],
                            [[f"{size:,}", kind, (r["dense_search"] or {}).get("ef_search") or "-",
                              f"{next(d['mib'] for d in s['dense']['rows'] if d['type'] == kind):.0f}",
                              f"{r['process']['peak_rss_mib']:,}", r["open_seconds"],
                              f"{r['search_seconds']} ({r['queries']})"]
                             for size, s in sizes.items() for kind, r in s.get("searchers", {}).items()])
    lines += ["", "Peak RSS of a process (and any child it waited for) that opens `DupMAESearcher` on the hybrid index "
                  "(the model in fp32, the JVM with Lucene's impact index, the FAISS index read into memory) and "
                  "searches every query in hybrid mode, top 1,000, in batches of 64; the Lucene index is "
                  "memory-mapped, so its pages count as they are touched.", ""]
    for s in sizes.values():
        lines += [s["latency"].strip(), ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a trained DupMAE checkpoint (e.g. the recipe's final one)")
    p.add_argument("--base", type=int, default=20_000, help="documents encoded by the model")
    p.add_argument("--chunk-size", type=int, default=4096, help="documents per encode chunk (the replicated unit)")
    p.add_argument("--sizes", default="100000,1000000", help="sizes reached by replication (multiples of --base)")
    p.add_argument("--types", default="flat-int8,hnsw-int8", help="dense types measured against flat")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", default="128,1024,2048", help="HNSW efSearch values measured")
    p.add_argument("--noise", type=float, default=0.1, help="replica vectors' noise, x each dimension's std")
    p.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--work", default="encoders/scale-search", help="working folder (indexes are written here)")
    p.add_argument("--fresh", action="store_true", help="measure again (indexes are reused)")
    p.add_argument("--build-only", action="store_true", help="build every size's indexes, measure nothing")
    _harness.add_report_args(p)
    p.add_argument("--child", choices=("dense", "postings", "searcher"), help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--index", help=argparse.SUPPRESS)
    p.add_argument("--served-ef", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()

    work = Path(args.work)
    if args.child:
        at = work / f"n{args.size}"
        if args.child == "dense":
            others = {t: at / f"index-{t}" for t in args.types.split(",")}
            out = measure_dense(at / "index-flat", others, work / TOPICS, [int(e) for e in args.ef_search.split(",")],
                                args.single)
        elif args.child == "searcher":
            out = measure_searcher(Path(args.index), work / TOPICS, args.served_ef)
        else:
            out = measure_postings(at / "index-flat", work / TOPICS)
        Path(args.result).write_text(json.dumps(out, indent=1))
        return 0

    if not args.model:
        p.error("--model is required")
    work = _harness.claim_work_dir(work, "scale_search")
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(s % args.base for s in sizes):
        p.error(f"--sizes must be multiples of --base {args.base}")
    shards, base = base_shards(work, Path(args.model), args.base, args.chunk_size, work / "base-encode.log")
    topics = write_topics(work)
    docs = work / f"corpus-{args.base}" / "docs.jsonl"
    results = {}
    for size in sizes:
        print(f"== {size:,} documents ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)
        build = build_size(args, work, shards, docs, size)
        if args.build_only:
            continue
        at = work / f"n{size}"
        latency = at / "latency.md"
        if not latency.is_file() or args.fresh:
            child([sys.executable, ROOT / "bench" / "latency.py", "--index", at / "index-flat", "--bm25-index",
                   at / "bm25", "--topics", topics, "--single", args.single, "--label",
                   f"{size:,} documents (flat FAISS, Lucene impact, BM25)", "--report", at / "latency-full.md"],
                  at / "latency.log")
            text = (at / "latency-full.md").read_text(encoding="utf-8")
            latency.write_text(text[text.index("\n### ") + 1:], encoding="utf-8")  # the section, not its header
        results[size] = {"build": build, "latency": latency.read_text(encoding="utf-8"),
                         "postings": run_child(args, "postings", size, at / "postings.json", at / "postings.log"),
                         "dense": run_child(args, "dense", size, at / "dense.json", at / "dense.log")}
        served_ef = {kind: served_ef_search(results[size]["dense"], kind) for kind in ["flat", *args.types.split(",")]}
        results[size]["searchers"] = {}
        for kind, ef in served_ef.items():  # the searcher a user would serve with each type: its peak RSS
            view = at / "index-flat" if kind == "flat" else hybrid_view(at, kind)
            name = f"searcher-{kind}" + (f"-ef{ef}" if ef else "")
            results[size]["searchers"][kind] = run_child(args, "searcher", size, at / f"{name}.json",
                                                         at / f"{name}.log", ["--index", view] +
                                                         (["--served-ef", ef] if ef else []))
        for kind in (t for t in args.types.split(",") if "hnsw" in t):  # the hybrid served at this size
            ef = served_ef[kind]
            name = f"latency-{kind}-ef{ef}"
            served = at / f"{name}.md"
            if not served.is_file() or args.fresh:
                child([sys.executable, ROOT / "bench" / "latency.py", "--index", hybrid_view(at, kind), "--bm25-index",
                       at / "bm25", "--topics", topics, "--single", args.single, "--ef-search", ef, "--label",
                       f"{size:,} documents ({kind} FAISS at efSearch {ef}, Lucene impact, BM25)", "--report",
                       at / f"{name}-full.md"], at / f"{name}.log")
                text = (at / f"{name}-full.md").read_text(encoding="utf-8")
                served.write_text(text[text.index("\n### ") + 1:], encoding="utf-8")
            results[size]["latency"] += "\n\n" + served.read_text(encoding="utf-8")
    if args.build_only:
        return 0
    text = report(args, base, results)
    print(text)
    if args.report:
        head = _harness.header("Search at 100k and 1M documents with a trained model's postings and vectors",
                               "Builds, impact postings, dense index types against flat, and latency of BM25, "
                               "dense, impact and hybrid search on replicated real-model indexes "
                               "(`bench/scale_search.py`).")
        _harness.write_report(args.report, head + "\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
