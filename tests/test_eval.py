"""``python -m dupmae_ir.eval beir`` on a local data folder: a SciFact slice (300 docs, with its index
pre-built so that it is reused), a collection without documents (NFCorpus from ../shared/data: queries
and qrels only) and an absent one (ArguAna): SciFact is scored for BM25 and the three DupMAE systems,
the others are reported missing; report, JSON and plots are written; a rerun keeps the finished
collection (~1.5 minutes)."""
from __future__ import annotations

import gzip
import json
import shutil

import pytest


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory, scifact_dir, shared_data, tiny_checkpoint, reference_slice_index):
    from dupmae_ir.data import resolve

    root = tmp_path_factory.mktemp("eval")
    data = root / "beir"
    (data / "scifact" / "qrels").mkdir(parents=True)
    coll = resolve(scifact_dir)
    index, _, docs = reference_slice_index  # the first 300 SciFact documents
    ids = {d.id for d in docs}
    with gzip.open(data / "scifact" / "corpus.jsonl.gz", "wt", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    qrels = {q: r for q, r in coll.qrels("test").items() if set(r) & ids}
    (data / "scifact" / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{v}\n" for q, r in qrels.items() for d, v in r.items()))
    queries = coll.queries("test")
    (data / "scifact" / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in qrels))
    shutil.copytree(shared_data / "beir" / "nfcorpus", data / "nfcorpus")
    # the index `dupmae_ir.encode` would build, pre-built (a copy of the session's) where eval keys it: eval must
    # reuse it
    shutil.copytree(index, root / "indexes" / _tag(tiny_checkpoint) / "scifact")
    return root, data, tiny_checkpoint, len(qrels)


def _tag(ckpt) -> str:
    """Eval's folder name for a checkpoint: its name and fingerprint (indexes, runs and reports)."""
    from dupmae_ir.eval.suites import encoder_tag
    from dupmae_ir.fingerprint import checkpoint_fingerprint

    return encoder_tag(str(ckpt), checkpoint_fingerprint(ckpt))


def _args(root, data, ckpt, *extra):
    return ["beir", "--datasets", "scifact", "nfcorpus", "arguana", "--data-dir", str(data), "--encoder", str(ckpt),
            "--index-root", str(root / "indexes"), "--runs", str(root / "runs"), "--output", str(root / "eval"),
            "--hits", "100", "--threads", "2", *extra]


def test_eval_scores_scifact_and_reports_missing(eval_setup):
    from dupmae_ir.eval.__main__ import main

    root, data, ckpt, n_queries = eval_setup
    assert main(_args(root, data, ckpt)) == 0
    out = root / "eval" / "beir" / _tag(ckpt)
    res = json.loads((out / "results" / "scifact.json").read_text())
    assert res["status"] == "ok" and res["judged_queries"] == n_queries
    assert set(res["scores"]) == {"bm25", "dense", "impact", "hybrid"}
    for scores in res["scores"].values():
        assert set(scores) == {"nDCG@10", "R@100", "R@1000"} and all(0 <= v <= 1 for v in scores.values())
    assert res["scores"]["bm25"]["nDCG@10"] > 0.5  # BM25 on a 300-doc slice is easy
    # each DupMAE mode tested against BM25 over the same judged queries, printed in the report
    assert set(res["paired"]) == {"dense", "impact", "hybrid"}
    for system, t in res["paired"].items():
        assert t["measure"] == "nDCG@10" and t["n"] == n_queries and 0 < t["p_rand"] <= 1 and 0 <= t["p_t"] <= 1
        assert t["mean_a"] == pytest.approx(res["scores"]["bm25"]["nDCG@10"], abs=1e-6)
        assert t["mean_b"] == pytest.approx(res["scores"][system]["nDCG@10"], abs=1e-6)
        assert t["ci_low"] <= t["delta"] <= t["ci_high"]
    assert not (out / "results" / "nfcorpus.json").exists()  # missing ones are re-checked on every run
    report = (out / "report.md").read_text()
    assert "| scifact | 0.665 | 0.653 | 0.699 |" in report
    assert "Paired tests against BM25" in report and "| scifact | nDCG@10 | hybrid | " in report
    nf = next(line for line in report.splitlines() if line.startswith("| nfcorpus"))
    assert "missing" in nf and "no corpus" in nf
    arg = next(line for line in report.splitlines() if line.startswith("| arguana"))
    assert "missing" in arg and "no folder" in arg
    rows = {r["collection"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert rows["scifact"]["status"] == "ok" and rows["nfcorpus"]["status"] == "missing"
    assert (out / "plot.png").stat().st_size > 1000 and (out / "plots" / "scifact.png").is_file()
    for system in ("dense", "impact", "hybrid"):
        assert (root / "runs" / "beir" / _tag(ckpt) / f"scifact.{system}.trec").is_file()
    assert (root / "runs" / "beir" / "bm25" / "scifact.bm25.trec.json").is_file()


def test_rerun_keeps_finished_collections(eval_setup):
    from dupmae_ir.eval.__main__ import main

    root, data, ckpt, _ = eval_setup
    result = root / "eval" / "beir" / _tag(ckpt) / "results" / "scifact.json"
    if not result.exists():
        assert main(_args(root, data, ckpt)) == 0
    before = result.read_text()
    assert main(_args(root, data, ckpt)) == 0
    assert result.read_text() == before  # not searched again
    assert main(_args(root, data, ckpt, "--force-search", "--modes", "hybrid", "--no-bm25",
                      "--measures", "nDCG@10", "RR@10")) == 0
    again = json.loads(result.read_text())
    assert set(again["scores"]) == {"hybrid"} and set(again["scores"]["hybrid"]) == {"nDCG@10", "RR@10"}


def test_bad_measure_and_dataset_names_fail_clearly(eval_setup):
    from dupmae_ir.errors import UserError
    from dupmae_ir.eval.__main__ import main

    root, data, ckpt, _ = eval_setup
    with pytest.raises(UserError, match="ir-measures"):
        main(_args(root, data, ckpt, "--measures", "nDCG@@10"))
    with pytest.raises(UserError, match="unknown BEIR collection"):
        main(["beir", "--datasets", "scifacts", "--data-dir", str(data)])


def test_bm25_only_eval_encodes_nothing(eval_setup, tmp_path):
    """``--mode`` with no value: BM25 alone; no index is built and the encoder is never loaded."""
    from dupmae_ir.eval.__main__ import main

    _, data, _, _ = eval_setup
    args = ["beir", "--datasets", "scifact", "--data-dir", str(data), "--encoder", "not/a/checkpoint",
            "--index-root", str(tmp_path / "indexes"), "--runs", str(tmp_path / "runs"),
            "--output", str(tmp_path / "eval"), "--hits", "100", "--threads", "2", "--mode"]
    assert main(args) == 0
    res = json.loads((tmp_path / "eval" / "beir" / "checkpoint" / "results" / "scifact.json").read_text())
    assert set(res["scores"]) == {"bm25"} and res["index"] is None
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == ["bm25"]
