"""The label-free route (``python -m dupmae_ir.adapt``) end to end on a toy BEIR corpus (40 SciFact documents
plus four without titles) with a tiny random checkpoint: pseudo-queries from titles and sentences, the
teacher file, WiSE-FT at 0 and 1, the indexes served by ``dupmae_ir.search --mode hybrid+bm25``, a re-run
that skips every step, and a user's folder refused."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, build_tiny_checkpoint, write_beir_slice

pytestmark = pytest.mark.slow  # the whole route (teacher, stage 3, WiSE-FT, encode) on a toy collection

UNTITLED = "Untitled finding number {i} about protein folding in yeast. A second sentence follows it here."


@pytest.fixture(scope="module")
def route(tmp_path_factory):
    """One run of the route; returns (tmp, argv, summary)."""
    from dupmae_ir.adapt import Adaptation, AdaptConfig
    from dupmae_ir.adapt.__main__ import build_parser

    tmp = tmp_path_factory.mktemp("adapt")
    toy = write_beir_slice("default", tmp / "toy", docs=40, queries=5)
    with open(toy / "corpus.jsonl", "a", encoding="utf-8") as fh:
        for i in range(4):
            fh.write(json.dumps({"_id": f"nt{i}", "title": "", "text": UNTITLED.format(i=i)}) + "\n")
    tiny = build_tiny_checkpoint(tmp / "tiny", seed=1)
    argv = ["--corpus", str(toy), "--checkpoint", str(tiny), "--output", str(tmp / "encoders" / "adapt-toy"),
            "--indexes", str(tmp / "indexes" / "adapt-toy"), "--pseudo-queries", "44", "--batch-size", "4",
            "--group-size", "3", "--teacher-depth", "5", "--teacher-backbone", str(tiny), "--doc-max-length", "64",
            "--query-max-length", "16", "--query-words", "12", "--lr", "1e-3", "--precision", "fp32",
            "--threads", "1", "--no-progress"]
    args = vars(build_parser().parse_args(argv))
    cfg = AdaptConfig(**{k: v for k, v in args.items() if k not in ("overwrite", "no_progress", "debug")},
                      progress=False)
    return tmp, cfg, Adaptation(cfg).run()


def test_pseudo_queries_are_titles_or_first_sentences(route):
    from dupmae_ir.adapt.pseudo import read_pseudo_queries
    from dupmae_ir.data import resolve

    tmp, cfg, summary = route
    docs = {d.id: d for d in resolve(tmp / "toy").iter_docs()}
    queries, sources = read_pseudo_queries(cfg.out / "pseudo-queries")
    assert len(queries) == 44 and set(sources.values()) == set(docs)  # every document, once each
    for q, text in queries.items():
        doc = docs[sources[q]]
        expected = doc.title or f"Untitled finding number {doc.id[2:]} about protein folding in yeast."
        assert text == " ".join(expected.split()[:12])
    assert sum(sources[q].startswith("nt") for q in queries) == 4


def test_teacher_file_ranks_the_source_document(route):
    from dupmae_ir.adapt.pseudo import read_pseudo_queries
    from dupmae_ir.data.training import read_teacher_scores

    tmp, cfg, summary = route
    _, sources = read_pseudo_queries(cfg.out / "pseudo-queries")
    teacher = read_teacher_scores(cfg.out / "teacher.tsv")
    assert set(teacher) == set(sources)
    assert all(sources[q] in teacher[q] and len(teacher[q]) == 5 for q in teacher)
    first = [q for q in teacher if max(teacher[q], key=teacher[q].get) == sources[q]]
    assert len(first) >= 40  # BM25 finds a document from its own title
    assert all(0.0 <= s <= 2.0 for hits in teacher.values() for s in hits.values())  # two normalised runs summed
    meta = json.loads((cfg.out / "teacher.tsv.json").read_text())
    assert meta["kind"] == "dupmae_ir.adapt.teacher" and meta["depth"] == 5


def test_interpolation_endpoints_are_the_start_and_the_finetuned_weights(route, tmp_path):
    from safetensors.torch import load_file

    from dupmae_ir.adapt.interpolate import interpolate_checkpoints

    _, cfg, summary = route
    start, finetuned = cfg.checkpoint, cfg.out / "finetuned"
    a, b = load_file(f"{start}/model.safetensors"), load_file(f"{finetuned}/model.safetensors")
    assert any(not a[k].equal(b[k]) for k in a)  # fine-tuning moved the weights
    for alpha, want in ((0.0, a), (1.0, b)):
        out = tmp_path / f"alpha{alpha}"
        out.mkdir()
        interpolate_checkpoints(start, finetuned, alpha, out)
        got = load_file(str(out / "model.safetensors"))
        assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)
        assert (out / "dupmae_config.json").read_text() == (finetuned / "dupmae_config.json").read_text()
    mid = load_file(str(summary.checkpoint / "model.safetensors"))  # the route's, at its alpha 0.5
    k = next(k for k in a if a[k].is_floating_point() and not a[k].equal(b[k]))
    assert mid[k].allclose(0.5 * a[k] + 0.5 * b[k], atol=1e-6)


def test_indexes_serve_hybrid_bm25_through_the_search_command(route):
    from dupmae_ir.runs import read_trec
    from dupmae_ir.search.__main__ import main as search

    tmp, cfg, summary = route
    meta = json.loads((summary.index / "dupmae_index.json").read_text())
    serving = meta["serving"]
    assert serving["mode"] == "hybrid+bm25" and serving["bm25_index"] == str(summary.bm25_index.resolve())
    run_file = tmp / "runs" / "toy.trec"
    assert "--mode hybrid+bm25" in summary.search_command
    argv = summary.search_command.split()[3:-1] + [str(tmp / "toy"), "--output", str(run_file), "--hits", "10"]
    assert search(argv) == 0
    run = read_trec(run_file)
    assert len(run) == 5 and all(len(hits) == 10 for hits in run.values())


def test_rerun_skips_finished_steps_and_a_users_folder_is_refused(route, tmp_path):
    from dupmae_ir.adapt import Adaptation

    tmp, cfg, summary = route
    assert summary.ran == ["pseudo-queries", "bm25 index", "teacher scores", "stage-3 fine-tuning", "interpolation",
                           "index"]  # no pre-training asked; the tiny start is a DupMAE checkpoint already
    before = (summary.checkpoint / "model.safetensors").stat().st_mtime_ns
    again = Adaptation(cfg).run()
    assert again.ran == [] and again.skipped == summary.ran
    assert (again.checkpoint / "model.safetensors").stat().st_mtime_ns == before
    # a changed setting on the same folder: refused without --overwrite, before any step
    from dataclasses import replace

    from dupmae_ir.errors import OutputError

    with pytest.raises(OutputError, match="other settings"):
        Adaptation(replace(cfg, interpolate=0.25)).run()
    # a folder the toolkit did not write: one line, exit 2, nothing written into it
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    proc = subprocess.run([sys.executable, "-m", "dupmae_ir.adapt", "--corpus", str(tmp / "toy"), "--checkpoint",
                           cfg.checkpoint, "--output", str(user), "--indexes", str(tmp_path / "idx")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "did not write" in proc.stderr
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"] and not (tmp_path / "idx").exists()
