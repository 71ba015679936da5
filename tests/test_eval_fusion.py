"""``python -m dupmae_ir.eval beir --data-dir`` with ``--mode hybrid+bm25 --baseline-backbone`` on a local
folder that is not a BEIR name: a SciFact slice (120 documents, the test queries judged in it), tiny random
checkpoints (the model, and a second one as the backbone). The report holds BM25, the backbone zero-shot,
BM25 + backbone and the model's rows with paired tests against BM25 and against BM25 + backbone; its
hybrid+bm25 run is the one ``dupmae_ir.search --mode hybrid+bm25`` writes on the same indexes; a rerun
reuses the result and the backbone's run."""
from __future__ import annotations

import json

import pytest
from conftest import build_tiny_checkpoint
from test_eval import _tag

pytestmark = pytest.mark.slow  # whole eval runs over four indexes and two checkpoints (~10 s on a 2-core CPU)

DOCS = 120
NAME = "scifact-slice"  # a local folder, not one of BEIR's names: eval takes any folder under --data-dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory, scifact_dir, tiny_checkpoint):
    from dupmae_ir.data import resolve

    root = tmp_path_factory.mktemp("eval_fusion")
    folder = root / "beir" / NAME
    (folder / "qrels").mkdir(parents=True)
    coll = resolve(scifact_dir)
    docs = []
    for d in coll.iter_docs():
        docs.append(d)
        if len(docs) == DOCS:
            break
    ids = {d.id for d in docs}
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n"
                                                 for d in docs))
    qrels = {q: r for q, r in coll.qrels("test").items() if set(r) & ids}
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{v}\n" for q, r in qrels.items() for d, v in r.items()))
    queries = coll.queries("test")
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in qrels))
    backbone = build_tiny_checkpoint(root / "backbone", seed=1)
    return root, folder, tiny_checkpoint, backbone, len(qrels)


def _args(root, ckpt, backbone, *extra):
    return ["beir", "--datasets", NAME, "--data-dir", str(root / "beir"), "--encoder", str(ckpt),
            "--index-root", str(root / "indexes"), "--runs", str(root / "runs"), "--output", str(root / "eval"),
            "--hits", "100", "--threads", "1", "--doc-max-length", "128", "--mode", "hybrid", "hybrid+bm25",
            "--baseline-backbone", str(backbone), *extra]


def test_eval_reports_the_fusion_beside_bm25_and_bm25_plus_backbone(setup):
    from dupmae_ir.eval.__main__ import main
    from dupmae_ir.eval.suites import encoder_tag
    from dupmae_ir.fingerprint import checkpoint_fingerprint
    from dupmae_ir.runs import fuse_normalize, read_trec

    root, _, ckpt, backbone, n_queries = setup
    assert main(_args(root, ckpt, backbone)) == 0
    out = root / "eval" / "beir" / _tag(ckpt)
    res = json.loads((out / "results" / f"{NAME}.json").read_text())
    assert set(res["scores"]) == {"bm25", "backbone", "bm25+backbone", "hybrid", "hybrid+bm25"}
    # every other row against BM25; the model's rows against BM25 + backbone too
    assert set(res["paired"]) == {"backbone", "bm25+backbone", "hybrid", "hybrid+bm25"}
    assert set(res["paired_backbone"]) == {"hybrid", "hybrid+bm25"}
    for system, t in res["paired_backbone"].items():
        assert t["n"] == n_queries and t["measure"] == "nDCG@10"
        assert t["mean_a"] == pytest.approx(res["scores"]["bm25+backbone"]["nDCG@10"], abs=1e-6)
        assert t["mean_b"] == pytest.approx(res["scores"][system]["nDCG@10"], abs=1e-6)
    # BM25 + backbone is the normalised fusion of the two runs on disk
    runs = {s: read_trec(p) for s, p in res["runs"].items()}
    backbone_tag = encoder_tag(str(backbone), checkpoint_fingerprint(backbone))
    assert res["runs"]["backbone"].startswith(str(root / "runs" / "beir" / backbone_tag))
    for q, hits in runs["bm25+backbone"].items():
        expected = fuse_normalize([runs["bm25"][q], runs["backbone"][q]], 100)
        assert [d for d, _ in hits] == [d for d, _ in expected]
        assert [s for _, s in hits] == pytest.approx([s for _, s in expected], abs=1e-6)
    sidecar = json.loads((root / "runs" / "beir" / backbone_tag / f"{NAME}.backbone.trec.json").read_text())
    assert sidecar["pooling"] == "mean" and sidecar["depends_on"]["inputs"]["backbone"] is not None
    report = (out / "report.md").read_text()
    assert "| collection | paper BM25 | paper RetroMAE | paper DupMAE | bm25 | backbone | bm25+backbone | hybrid " \
           "| hybrid+bm25 | note |" in report
    assert "backbone zero-shot (mean pooling)" in report and "BM25 + backbone, normalised fusion" in report
    assert "Paired tests against BM25 + backbone" in report
    assert f"| {NAME} | nDCG@10 | hybrid+bm25 | " in report.split("Paired tests against BM25 + backbone")[1]


def test_eval_hybrid_bm25_run_is_the_search_commands(setup, tmp_path):
    from dupmae_ir.runs import read_trec
    from dupmae_ir.search.__main__ import main as search

    root, folder, ckpt, backbone, _ = setup
    run = root / "runs" / "beir" / _tag(ckpt) / f"{NAME}.hybrid+bm25.trec"
    if not run.is_file():
        from dupmae_ir.eval.__main__ import main

        assert main(_args(root, ckpt, backbone)) == 0
    out = tmp_path / "search.trec"
    assert search(["--index", str(root / "indexes" / _tag(ckpt) / NAME), "--topics", str(folder),
                   "--bm25-index", str(root / "indexes" / "bm25" / NAME), "--mode", "hybrid+bm25",
                   "--hits", "100", "--threads", "1", "--output", str(out)]) == 0
    ours, theirs = read_trec(run), read_trec(out)
    assert ours == theirs and len(ours) > 1 and all(len(h) == 100 for h in ours.values())


def test_rerun_reuses_the_result_and_the_backbones_run(setup):
    from dupmae_ir.errors import UserError
    from dupmae_ir.eval.__main__ import main

    root, _, ckpt, backbone, _ = setup
    result = root / "eval" / "beir" / _tag(ckpt) / "results" / f"{NAME}.json"
    if not result.is_file():
        assert main(_args(root, ckpt, backbone)) == 0
    before = result.read_text()
    backbone_run = next((root / "runs" / "beir").glob(f"backbone-*/{NAME}.backbone.trec"))
    stamp = backbone_run.stat().st_mtime_ns
    assert main(_args(root, ckpt, backbone)) == 0
    assert result.read_text() == before  # fingerprints and settings unchanged: nothing searched again
    assert main(_args(root, ckpt, backbone, "--force-search")) == 0
    again = json.loads(result.read_text())
    assert backbone_run.stat().st_mtime_ns == stamp  # the backbone's run is reused, not scored again
    assert again["scores"] == json.loads(before)["scores"]
    with pytest.raises(UserError, match="--no-bm25"):
        main(_args(root, ckpt, backbone, "--no-bm25"))
