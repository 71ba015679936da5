"""The dense side of a search process at MS MARCO's size (issue 36, item 4): for each FAISS index type,
at N vectors of 384 and 768 dimensions, the searcher's resident memory, build time, single-query and
batched speed, and the top-k recall against exact search, measured with FAISS alone.

    python bench/memory_plan.py --index IDX --queries QUERIES.jsonl [--count 8841823] [--dims 384,768]
                                [--types flat,flat-int8,ivfpq] [--report eval/memory-plan.md]

The vectors are synthetic, drawn from a trained model's distribution: the mean and covariance of the
document vectors of a toolkit index (``--index``, e.g. a DupMAE checkpoint's), sampled as
``mean + z @ cholesky(cov).T`` in chunks seeded by their number (every child draws the same corpus).
768 dimensions are two independent 384-dimension draws side by side. The queries are real: the first
``--num-queries`` queries of ``--queries``, encoded by the index's own query encoder (768: each query
beside the next one). Exact top-k comes from a streamed exhaustive search over the same chunks.

Each index type is built in a child process and written to ``--work``; a second child reads it back as a
searcher would (``faiss.read_index``) and measures VmRSS (before and after loading), single-query
latency (each query alone: p50, p99), batched queries/s (all queries at once) and recall@k against exact.
A third child measures the rest of a searcher (``DupMAESearcher`` on ``--index``: model, JVM, Lucene)
minus its own FAISS bytes, so the report can add the two.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import _harness

CHUNK = 100_000
MIB = 1024 * 1024


def status_mib(field: str) -> float:
    """``field`` (VmRSS, VmHWM) of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------------
# the synthetic corpus
# ------------------------------------------------------------------------------------------------
def fit_distribution(index_dir: Path, work: Path) -> Path:
    """Mean and Cholesky factor of the document vectors of ``index_dir``'s FAISS index (``dist.npz``)."""
    import faiss
    import numpy as np

    index = faiss.read_index(str(index_dir / "dense" / "index"))
    x = index.reconstruct_n(0, index.ntotal).astype(np.float64)  # (n, d)
    mean = x.mean(0)
    cov = np.cov(x, rowvar=False) + 1e-6 * np.eye(x.shape[1])
    out = work / "dist.npz"
    np.savez(out, mean=mean.astype(np.float32), chol=np.linalg.cholesky(cov).astype(np.float32),
             docs=x.shape[0], norm=float(np.linalg.norm(x, axis=1).mean()))
    return out


def chunks(dist: Path, dim: int, count: int, seed: int = 7):
    """The synthetic corpus of ``count`` vectors of ``dim`` (384 or twice it), chunk by chunk."""
    import numpy as np

    d = np.load(dist)
    mean, chol = d["mean"], d["chol"]
    base = len(mean)
    parts = dim // base
    if parts * base != dim:
        raise SystemExit(f"--dims: {dim} is not a multiple of the model's {base} dimensions")
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        rng = np.random.default_rng([seed, start])
        yield np.ascontiguousarray(np.concatenate(
            [mean + rng.standard_normal((n, base), dtype=np.float32) @ chol.T for _ in range(parts)], axis=1))


def encode_queries(index_dir: Path, queries_file: Path, num: int, work: Path) -> dict:
    """The first ``num`` queries (by id) through the index's query encoder (``queries.npy``), and the RSS of a
    whole searcher on ``index_dir`` after searching them (the non-FAISS part of a search process)."""
    import numpy as np

    from dupmae_ir.data.readers import load_queries_file
    from dupmae_ir.search import DupMAESearcher

    queries = load_queries_file(queries_file)
    qids = sorted(queries)[:num]
    before = status_mib("VmRSS")
    searcher = DupMAESearcher(index_dir)
    enc = searcher.encoder.encode_queries([queries[q] for q in qids])
    np.save(work / "queries.npy", np.ascontiguousarray(enc.dense, dtype=np.float32))
    searcher.search_all({q: queries[q] for q in qids}, modes=("hybrid",), hits=1000, progress=False)
    faiss_mib = (index_dir / "dense" / "index").stat().st_size / MIB
    return {"queries": len(qids), "searcher_rss_mib": status_mib("VmRSS"), "python_rss_mib": before,
            "searcher_faiss_mib": faiss_mib}


def query_matrix(work: Path, dim: int):
    import numpy as np

    q = np.load(work / "queries.npy")
    parts = dim // q.shape[1]
    return np.ascontiguousarray(np.concatenate([np.roll(q, -i, axis=0) for i in range(parts)], axis=1))


# ------------------------------------------------------------------------------------------------
# children
# ------------------------------------------------------------------------------------------------
def exact_topk(work: Path, dist: Path, dim: int, count: int, k: int) -> dict:
    """Exact inner-product top-``k`` of the queries over the streamed corpus (``truth-{dim}.npy``)."""
    import faiss
    import numpy as np

    q = query_matrix(work, dim)
    best_d = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    start = time.time()
    offset = 0
    for x in chunks(dist, dim, count):
        d, i = faiss.knn(q, x, min(k, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
        all_d = np.concatenate([best_d, d], axis=1)
        all_i = np.concatenate([best_i, i + offset], axis=1)
        top = np.argsort(-all_d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(all_d, top, 1), np.take_along_axis(all_i, top, 1)
        offset += len(x)
    np.save(work / f"truth-{dim}.npy", best_i)
    return {"seconds": round(time.time() - start, 1)}


def fill_codes(index, vectors, count: int) -> None:
    """Add ``count`` vectors to an exhaustive index (``IndexFlatCodes``) through one preallocated code
    array: FAISS's own ``add`` grows it by doubling, a transient 1.5x of the index at 8.8M vectors."""
    import faiss

    size = index.code_size
    index.codes.resize(count * size)
    codes = faiss.rev_swig_ptr(index.codes.data(), count * size)
    at = 0
    for x in vectors:
        codes[at * size:(at + len(x)) * size] = index.sa_encode(x).ravel()
        at += len(x)
    index.ntotal = count


def build(work: Path, dist: Path, dim: int, count: int, kind: str, params: dict) -> dict:
    """Build ``kind`` over the corpus (training on its first vectors, as ``encode`` does) and write it.
    Exhaustive types fill one preallocated code array (no doubling while adding)."""
    import faiss
    import numpy as np

    from dupmae_ir.dense_index import DenseIndexSpec, _new_index, _resolve

    spec = _resolve(DenseIndexSpec(kind, **params), dim, count)
    index = _new_index(spec, dim)
    start = time.time()
    trained_on = 0
    if not index.is_trained:
        want = max(65536, 39 * (spec.nlist or 0))
        sample = []
        for x in chunks(dist, dim, min(count, want)):
            sample.append(x)
        train = np.concatenate(sample)[:want]
        index.train(train)
        trained_on = len(train)
        del sample, train
    t_train = time.time() - start
    if kind in ("flat", "flat-int8"):
        fill_codes(faiss.downcast_index(index), chunks(dist, dim, count), count)
    else:
        for x in chunks(dist, dim, count):
            index.add(x)
    seconds = time.time() - start
    path = work / f"{kind}-{dim}.faiss"
    faiss.write_index(index, str(path))
    return {"build_s": round(seconds, 1), "train_s": round(t_train, 1), "trained_on": trained_on,
            "file_mib": round(path.stat().st_size / MIB, 1), "build_peak_mib": round(status_mib("VmHWM")),
            "params": spec.build_params()}


def search(work: Path, dim: int, kind: str, ks: list[int], ef_search: int | None, nprobe: int | None) -> dict:
    """Load the written index as a searcher does and measure memory, speed and recall against exact."""
    import faiss
    import numpy as np

    from dupmae_ir.dense_index import apply_search_knobs

    q = query_matrix(work, dim)
    truth = np.load(work / f"truth-{dim}.npy")
    before = status_mib("VmRSS")
    t = time.time()
    index = faiss.read_index(str(work / f"{kind}-{dim}.faiss"))
    load_s = time.time() - t
    loaded = status_mib("VmRSS")
    knobs = apply_search_knobs(index, ef_search=ef_search, nprobe=nprobe, kind=kind)
    k = max(ks)
    index.search(q[:1], k)  # warm-up
    single, ids = [], []
    for row in q:
        t = time.perf_counter()
        _, i = index.search(row[None, :], k)
        single.append(time.perf_counter() - t)
        ids.append(i[0])
    t = time.perf_counter()
    _, batch_ids = index.search(q, k)
    batch_s = time.perf_counter() - t
    ids = np.stack(ids)
    recall = {f"recall@{c}": round(float(np.mean([len(set(a[:c]) & set(b[:c])) / c for a, b in zip(ids, truth)])), 4)
              for c in ks}
    return {"rss_before_mib": round(before), "rss_loaded_mib": round(loaded), "index_rss_mib": round(loaded - before),
            "peak_mib": round(status_mib("VmHWM")), "load_s": round(load_s, 1),
            "p50_ms": round(1000 * _harness.percentile(single, 50), 2),
            "p99_ms": round(1000 * _harness.percentile(single, 99), 2),
            "batch_qps": round(len(q) / batch_s, 1), "knobs": knobs, **recall}


def child(args) -> int:
    work, dist = Path(args.work), Path(args.work) / "dist.npz"
    if args.child == "queries":
        out = encode_queries(Path(args.index), Path(args.queries), args.num_queries, work)
    elif args.child == "truth":
        out = exact_topk(work, dist, args.dim, args.count, max(args.ks))
    elif args.child == "build":
        out = build(work, dist, args.dim, args.count, args.kind, json.loads(args.params))
    else:
        out = search(work, args.dim, args.kind, args.ks, args.ef_search, args.nprobe)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def run_child(args, *extra: str) -> dict:
    """One measurement in a fresh interpreter (its own RSS); its RESULT line."""
    cmd = [sys.executable, __file__, "--child", *extra, "--work", args.work, "--count", str(args.count),
           "--ks", ",".join(map(str, args.ks))]
    print("+", " ".join(cmd[2:]), flush=True)
    _, _, out = _harness.run_measured(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"child {extra} printed no RESULT line:\n{out[-2000:]}")
    result = json.loads(lines[-1][7:])
    print("  ", result, flush=True)
    return result


# ------------------------------------------------------------------------------------------------
# the study and its report
# ------------------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--index", help="a toolkit index (python -m dupmae_ir.encode) whose vectors give the distribution")
    p.add_argument("--queries", help="BEIR queries.jsonl: the real queries, encoded by the index's query encoder")
    p.add_argument("--num-queries", type=int, default=100)
    p.add_argument("--count", type=int, default=8_841_823, help="vectors (default: MS MARCO passage's count)")
    p.add_argument("--dims", default="384,768")
    p.add_argument("--types", default="flat,flat-int8,ivfpq", help="FAISS types of dupmae_ir.dense_index")
    p.add_argument("--skip", default="flat@768", help="TYPE@DIM pairs not built (flat at 768 needs 27 GB)")
    p.add_argument("--nlist", type=int, default=4096, help="IVF lists (the encode default 4*sqrt(N) is 11,894 at 8.8M)")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=int, default=None)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--ks", default="100,1000")
    p.add_argument("--about", default="", help="what --index is (how it was made), for the report")
    p.add_argument("--budget-gib", type=float, default=16.0, help="the search process's memory budget")
    p.add_argument("--work", default="encoders/memory-plan", help="working folder (indexes are written here)")
    p.add_argument("--report-only", action="store_true",
                   help="write the report again from --work's results.json (the measuring run's header kept)")
    p.add_argument("--child", choices=("queries", "truth", "build", "search"), help=argparse.SUPPRESS)
    p.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    _harness.add_report_args(p, "eval/memory-plan.md")
    args = p.parse_args()
    args.ks = [int(k) for k in str(args.ks).split(",")]
    if args.child:
        return child(args)
    work = Path(args.work)
    if args.report_only:
        saved = json.loads((work / "results.json").read_text(encoding="utf-8"))
        report(args, saved["rest"], saved["rows"], saved["header"])
        return 0
    head = title_and_header(args)
    work = _harness.claim_work_dir(work, "memory_plan")
    fit_distribution(Path(args.index), work)
    rest = run_child(args, "queries", "--index", args.index, "--queries", args.queries,
                     "--num-queries", str(args.num_queries))
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        truth = run_child(args, "truth", "--dim", str(dim))
        for kind in args.types.split(","):
            if f"{kind}@{dim}" in args.skip.split(","):
                rows.append({"dim": dim, "kind": kind, "skipped": True})
                continue
            params = {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction} if "hnsw" in kind else {}
            if kind == "ivfpq":
                params = {"nlist": args.nlist}
            built = run_child(args, "build", "--dim", str(dim), "--kind", kind, "--params", json.dumps(params))
            knobs = [a for flag, v in (("--ef-search", args.ef_search if "hnsw" in kind else None),
                                       ("--nprobe", args.nprobe if kind == "ivfpq" else None))
                     if v is not None for a in (flag, str(v))]
            measured = run_child(args, "search", "--dim", str(dim), "--kind", kind, *knobs)
            (work / f"{kind}-{dim}.faiss").unlink()
            rows.append({"dim": dim, "kind": kind, "truth_s": truth["seconds"], **built, **measured})
            (work / "results.json").write_text(json.dumps({"rest": rest, "rows": rows, "header": head}, indent=1))
    report(args, rest, rows, head)
    return 0


def title_and_header(args) -> str:
    """The report's head (this command, date, machine, commit), taken when the measurement starts."""
    return _harness.header(f"Memory plan: dense indexes at {args.count:,} vectors",
                           "For each FAISS index type of `dupmae_ir.dense_index`, at MS MARCO passage's 8.8M "
                           "vectors, the resident memory of a search process, build time, speed and recall "
                           "against exact search, measured with FAISS alone (`bench/memory_plan.py`).")


def report(args, rest: dict, rows: list[dict], head: str) -> None:
    import numpy as np

    d = np.load(Path(args.work) / "dist.npz")
    other = rest["searcher_rss_mib"] - rest["searcher_faiss_mib"]
    budget = args.budget_gib * 1024
    cols = ["dim", "type", "build params", "build s", "index file MiB", "searcher RSS MiB (FAISS alone)",
            "+ model, JVM, Lucene (MiB)", f"under {args.budget_gib:g} GiB", "single query p50 / p99 ms",
            "batched q/s"] + [f"recall@{k} vs exact" for k in args.ks]
    table = []
    for r in rows:
        if r.get("skipped"):
            need = args.count * r["dim"] * 4 / MIB if r["kind"] == "flat" else None  # only flat's size is known
            size = "" if need is None else f"{need:,.0f} (4 bytes x d x N)"
            fits = "" if need is None else "no" if need + other > budget else "yes"
            table.append([r["dim"], r["kind"], "", "not built", size, "", "", fits, "", ""] + [""] * len(args.ks))
            continue
        total = r["rss_loaded_mib"] + other
        table.append([r["dim"], r["kind"], json.dumps({**r["params"], **{k: v for k, v in r["knobs"].items()
                                                                          if k != "faiss"}}),
                      f"{r['build_s']:.0f}", f"{r['file_mib']:,.0f}", f"{r['rss_loaded_mib']:,}",
                      f"{total:,.0f}", "yes" if total <= budget else "no", f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
                      f"{r['batch_qps']:.1f}"] + [f"{r[f'recall@{k}']:.4f}" for k in args.ks])
    body = [f"Vectors: {args.count:,} per dimension, drawn from the distribution of the {int(d['docs']):,} "
            f"document vectors of `{_harness.portable(args.index)}` (mean vector norm {float(d['norm']):.2f}); "
            f"queries: the first {rest['queries']} of `{_harness.portable(args.queries)}` by id, encoded by that "
            f"index's query encoder. A whole searcher on that index (`DupMAESearcher`: model, JVM, Lucene, a "
            f"{rest['searcher_faiss_mib']:.1f} MiB FAISS index) holds {rest['searcher_rss_mib']:,.0f} MiB after "
            f"searching them: {other:,.0f} MiB besides FAISS, added in the seventh column. {args.about}", "",
            *_harness.markdown_table(cols, table)]
    _harness.write_report(args.report, head + "\n" + "\n".join(body) + "\n")


if __name__ == "__main__":
    sys.exit(main())
