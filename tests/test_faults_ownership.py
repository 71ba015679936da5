"""Ownership for every writer (issue 32, item 1): a command writes only into what it marked as its own.

Training output folders, run files *and* their sidecars, temporary folders and moved-aside outputs all
go through one claim in ``dupmae_ir.outputs``: refused unless its marker says this command wrote it,
replaced only with the overwrite flag, leftovers matched by exact name and marker, a run and its
sidecar renamed as a pair, and the lock held over a search's whole work. Real commands, a tiny random
BERT, FAISS and Anserini throughout.
"""
from __future__ import annotations

import fcntl
import json
import os
import resource
import shutil
import signal

import pytest
import test_faults
from test_faults import assert_one_line_error, cli, encode_args, leftovers, snapshot

corpus = test_faults.corpus  # the fault tests' 40-document SciFact slice and its index (module fixtures)
index = test_faults.index


def _pretrain_args(checkpoint, output_dir, cache_dir, **kw):
    from dupmae_ir.train.arguments import PretrainArguments

    base = dict(model_name_or_path=str(checkpoint), corpus="default", max_docs=16, max_seq_length=32, batch_size=8,
                max_steps=1, save_steps=1, logging_steps=1, output_dir=str(output_dir), cache_dir=str(cache_dir),
                disable_tqdm=True)
    return PretrainArguments(**{**base, **kw})


def _search(index, corpus, run, *extra, preexec_fn=None):
    return cli("search", "--index", index, "--topics", corpus / "queries.jsonl", "--output", run, "--mode", "dense",
               *extra, preexec_fn=preexec_fn)


def test_d1_training_never_writes_into_a_folder_it_did_not_mark(tiny_checkpoint, tmp_path):
    """A user's project with a ``checkpoints/`` folder, and a copy of a model folder (its
    ``dupmae_config.json``), are refused with or without --overwrite-output-dir, and stay as they were."""
    from dupmae_ir.errors import OutputError
    from dupmae_ir.train.pretraining import run_pretraining

    project = tmp_path / "project"
    (project / "checkpoints").mkdir(parents=True)
    (project / "config.json").write_text('{"mine": true}')
    (project / "model.safetensors").write_bytes(b"the user's weights")
    copy = tmp_path / "model-copy"
    shutil.copytree(tiny_checkpoint, copy)
    for folder in (project, copy):
        before = snapshot(folder)
        for overwrite in (False, True):
            with pytest.raises(OutputError, match="did not write"):
                run_pretraining(_pretrain_args(tiny_checkpoint, folder, tmp_path / "cache",
                                               overwrite_output_dir=overwrite))
            assert snapshot(folder) == before
            assert sorted(p.name for p in folder.iterdir()) == sorted({p.split("/")[0] for p in before} |
                                                                      ({"checkpoints"} if folder is project else set()))


def test_d2_a_users_sidecar_is_never_replaced(corpus, index, tmp_path):
    """``<output>.json`` is checked like the run itself: a user's file or a link there is refused and kept."""
    from dupmae_ir.errors import OutputError
    from dupmae_ir.runs import write_trec

    results = tmp_path / "results"
    (tmp_path / "results.json").write_text('{"my": "results"}')
    proc = _search(index, corpus, results)
    assert_one_line_error(proc, str(tmp_path / "results.json"), "not written by dupmae_ir")
    assert (tmp_path / "results.json").read_text() == '{"my": "results"}' and not results.exists()

    (tmp_path / "run.trec.json").write_text('{"notes": 1}')
    with pytest.raises(OutputError, match="not written by dupmae_ir"):
        write_trec(tmp_path / "run.trec", {"q1": [("d1", 1.0)]}, "t")
    assert (tmp_path / "run.trec.json").read_text() == '{"notes": 1}' and not (tmp_path / "run.trec").exists()

    write_trec(tmp_path / "real.trec", {"q1": [("d1", 1.0)]}, "t")  # a toolkit sidecar, reached by a link
    (tmp_path / "link.trec.json").symlink_to(tmp_path / "real.trec.json")
    target = (tmp_path / "real.trec.json").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="symbolic link"):
            write_trec(tmp_path / "link.trec", {"q2": [("d2", 2.0)]}, "t", overwrite=overwrite)
        assert (tmp_path / "link.trec.json").is_symlink() and (tmp_path / "real.trec.json").read_bytes() == target
    assert not (tmp_path / "link.trec").exists()


@pytest.mark.slow  # two whole encodes, one in a child process (~10-13 s)
def test_d3_encode_keeps_the_temporary_folder_of_another_output(corpus, tiny_checkpoint, tmp_path):
    """An encode to ``idx`` while ``idx.v2`` is being written keeps ``.idx.v2.tmp-<pid>``; a dead run's
    own temporary folder of ``idx`` is still removed."""
    from dupmae_ir.index import INDEX_OUTPUT
    from dupmae_ir.outputs import claim_output_dir

    out = tmp_path / "idx"
    with claim_output_dir(out, INDEX_OUTPUT) as dead:  # a run of `idx` that died with a temporary folder
        dead_tmp = dead.temp_dir()
    with claim_output_dir(tmp_path / "idx.v2", INDEX_OUTPUT) as other:  # a concurrent encode to idx.v2
        busy = other.temp_dir()
        (busy / "half-built").write_text("in progress")
        proc = cli("encode", *encode_args(corpus, tiny_checkpoint, out), process=True)  # another pid than the dead run
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (busy / "half-built").read_text() == "in progress"
    assert not dead_tmp.exists()
    assert (out / "dupmae_index.json").is_file()


@pytest.mark.slow  # two whole encodes with their Anserini builds (~7-10 s)
def test_d15_encode_never_touches_a_users_old_backup(corpus, tiny_checkpoint, index, tmp_path):
    """A user's ``.idx.old-backup`` is neither moved into place nor deleted by ``--overwrite``; an
    output a dead run had moved aside (in its marked folder) is still put back."""
    out = tmp_path / "idx"
    backup = tmp_path / ".idx.old-backup"
    shutil.copytree(index, backup)
    before = snapshot(backup)
    for extra in ((), ("--overwrite",)):
        proc = cli("encode", *encode_args(corpus, tiny_checkpoint, out, *extra))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert snapshot(backup) == before
    from dupmae_ir.index import INDEX_OUTPUT
    from dupmae_ir.outputs import ASIDE, claim_output_dir

    built = snapshot(out)
    with claim_output_dir(out, INDEX_OUTPUT, overwrite=True) as dead:  # died right after moving idx aside
        os.rename(out, dead.temp_dir("old") / ASIDE)
    with claim_output_dir(out, INDEX_OUTPUT, overwrite=True):
        assert snapshot(out) == built
    assert snapshot(backup) == before


def test_d7_failed_search_overwrite_keeps_the_old_pair(corpus, index, tmp_path):
    """A search --overwrite that cannot write its run (RLIMIT_FSIZE stands in for a full disk) leaves
    the earlier run and its sidecar as they were, and no temporary file."""
    run = tmp_path / "run.trec"
    proc = _search(index, corpus, run, "--hits", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sidecar = tmp_path / "run.trec.json"
    old_run, old_sidecar = run.read_bytes(), sidecar.read_bytes()
    limit = len(old_sidecar) + 1024  # room for the new sidecar, not for the new run of 40 hits per query

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = _search(index, corpus, run, "--hits", 40, "--overwrite", preexec_fn=small_files)
    assert proc.returncode != 0
    assert run.read_bytes() == old_run and sidecar.read_bytes() == old_sidecar
    assert_one_line_error(proc, str(run), "File too large")
    assert leftovers(run) == []
    proc = _search(index, corpus, run, "--hits", 40, "--overwrite")  # and without the limit, a new pair
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(sidecar.read_text())["hits"] == 40 and len(run.read_text().splitlines()) > limit // 60


def test_d16_a_second_search_to_the_same_run_fails_at_once(corpus, index, tmp_path):
    """While a writer holds ``.NAME.lock`` of a run file, a search to it fails before opening the index,
    with or without --overwrite; afterwards it writes."""
    run = tmp_path / "run.trec"
    lock_path = tmp_path / ".run.trec.lock"
    with open(lock_path, "w") as held:  # what a first search holds over its whole work
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        for extra in ((), ("--overwrite",)):
            assert_one_line_error(_search(index, corpus, run, *extra), str(run), f"pid {os.getpid()}")
        # the lock is taken before the index is opened: a missing index is not even noticed
        proc = _search(tmp_path / "no-such-index", corpus, run, "--overwrite")
        assert_one_line_error(proc, str(run), "another process")
        assert not run.exists() and not (tmp_path / "run.trec.json").exists()
    proc = _search(index, corpus, run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run.is_file() and not lock_path.exists()
