"""Validated inputs (issue 32, class 3): every number, checkpoint, corpus line and collection reference a
user gives is checked before work starts, and a bad one is one line ``error: <where>: <what> (fix: ...)``
with exit status 2, never a traceback, an empty run or a half-written output. Defects D6, D9, D11, D13,
D14, D18, D19, each driven through the real commands on a tiny random checkpoint and a SciFact slice.
"""
from __future__ import annotations

import gzip
import json
import resource
import shutil
import signal
from pathlib import Path

import pytest
from conftest import build_tiny_checkpoint
from test_faults import assert_one_line_error, cli, leftovers

SLICE = 40  # conftest's faults_corpus: the first 40 SciFact documents and six test queries


@pytest.fixture(scope="module")
def corpus(faults_corpus) -> Path:
    return faults_corpus


@pytest.fixture(scope="module")
def index(faults_index) -> Path:
    return faults_index


def encode_args(corpus, ckpt, out, *extra):
    return ["--corpus", corpus, "--encoder", ckpt, "--output", out, "--dtype", "fp32", "--chunk-size", 16,
            "--no-progress", *extra]


def search_args(index, corpus, run, *extra):
    return ["--index", index, "--topics", corpus / "queries.jsonl", "--output", run, *extra]


def checkpoint_copy(tiny_checkpoint: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    damage(copy)
    return copy


def _no_tokenizer(c: Path):
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (c / name).unlink(missing_ok=True)


def _five_token_vocab(c: Path):
    (c / "tokenizer.json").unlink()
    (c / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")


# ------------------------------------------------------------------------------------------------
# D6: a checkpoint without its tokenizer (or with another one) is refused before anything is written
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, words", [(_no_tokenizer, ["no tokenizer files"]),
                                           (_five_token_vocab, ["5 tokens", "vocab_size is 30522"])])
def test_d6_checkpoint_without_its_tokenizer_is_refused(corpus, tiny_checkpoint, tmp_path, damage, words):
    ckpt = checkpoint_copy(tiny_checkpoint, tmp_path, damage)
    out = tmp_path / "out"
    proc = cli("encode", *encode_args(corpus, ckpt, out, "--dense-only"))
    assert_one_line_error(proc, str(ckpt), *words)
    assert not out.exists() and leftovers(out) == []


# ------------------------------------------------------------------------------------------------
# D9: input size is bounded
# ------------------------------------------------------------------------------------------------
def test_d9_corpus_line_over_the_cap_is_named_before_it_is_held(corpus, tiny_checkpoint, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    lines = (corpus / "corpus.jsonl").read_text().splitlines(keepends=True)[:3]
    lines.insert(1, json.dumps({"_id": "huge", "text": "word " * 300_000}) + "\n")  # 1.5 MB of text
    (folder / "corpus.jsonl.gz").write_bytes(gzip.compress("".join(lines).encode()))
    out = tmp_path / "out"
    proc = cli("encode", *encode_args(folder, tiny_checkpoint, out, "--dense-only"))
    assert_one_line_error(proc, f"{folder / 'corpus.jsonl.gz'}:2", "longer than 1048576 bytes", "--max-doc-bytes")
    # the cap is a flag: raised, the same reader takes the line
    from dupmae_ir.data import resolve
    from dupmae_ir.data.readers import iter_jsonl_corpus

    docs = list(iter_jsonl_corpus(resolve(folder).corpus_files(), max_line_bytes=2 << 20))
    assert [d.id for d in docs][1] == "huge" and len(docs[1].text) == len("word " * 300_000) - 1


def test_d9_hits_are_clamped_to_the_index_size(corpus, index, tmp_path):
    run = tmp_path / "run.trec"
    proc = cli("search", *search_args(index, corpus, run, "--mode", "dense", "--hits", 2_000_000))
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_query: dict[str, int] = {}
    for line in run.read_text().splitlines():
        per_query[line.split()[0]] = per_query.get(line.split()[0], 0) + 1
    assert len(per_query) == 6 and set(per_query.values()) == {SLICE}
    assert json.loads(Path(f"{run}.json").read_text())["hits"] == SLICE


def _no_more_than_8_gb():
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # the bomb must never be allocated here


def test_d9_vocab_size_bomb_is_refused_before_allocation(corpus, tiny_checkpoint, tmp_path):
    def bomb(c: Path):
        config = json.loads((c / "config.json").read_text())
        (c / "config.json").write_text(json.dumps({**config, "vocab_size": 2_000_000_000}))

    ckpt = checkpoint_copy(tiny_checkpoint, tmp_path, bomb)
    out = tmp_path / "out"
    proc = cli("encode", *encode_args(corpus, ckpt, out), preexec_fn=_no_more_than_8_gb)
    assert_one_line_error(proc, str(ckpt / "config.json"), "vocab_size=2000000000", "[30522, 32]")
    assert not out.exists() and leftovers(out) == []


# ------------------------------------------------------------------------------------------------
# D11 and D13: every number is checked while the flags are parsed
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value", [
    ("--batch-size", "-1"), ("--batch-size", "0"), ("--alpha", "nan"), ("--alpha", "inf"), ("--min-idf", "nan"),
    ("--query-max-length", "0"), ("--hits", "0"), ("--hits", "-3"), ("--depth", "-1"), ("--query-topk", "-1"),
])
def test_d11_d13_bad_search_numbers_are_one_line(corpus, index, tmp_path, flag, value):
    run = tmp_path / "run.trec"
    proc = cli("search", *search_args(index, corpus, run, flag, value))
    assert_one_line_error(proc, flag, repr(value))
    assert not run.exists()


@pytest.mark.parametrize("extra, words", [
    (["--batch-size", "0"], ["--batch-size", "'0'"]), (["--batch-size", "-1"], ["--batch-size", "'-1'"]),
    (["--chunk-size", "0"], ["--chunk-size", "'0'"]), (["--doc-max-length", "0"], ["--doc-max-length", "'0'"]),
    (["--doc-max-length", "-5"], ["--doc-max-length", "'-5'"]),
    (["--doc-max-length", "100000"], ["--doc-max-length", "100000", "512 positions"]),
    (["--shard-id", "3", "--shard-num", "2"], ["--shard-id", "out of range"]),
])
def test_d13_bad_encode_numbers_are_one_line_and_leave_nothing(corpus, tiny_checkpoint, tmp_path, extra, words):
    out = tmp_path / "out"
    proc = cli("encode", *encode_args(corpus, tiny_checkpoint, out, *extra))
    assert_one_line_error(proc, *words)
    assert not out.exists() and leftovers(out) == []  # no .out.partial either


def test_d13_truncated_safetensors_is_one_line(corpus, tiny_checkpoint, tmp_path):
    def truncate(c: Path):
        data = (c / "model.safetensors").read_bytes()
        (c / "model.safetensors").write_bytes(data[: len(data) // 2])

    ckpt = checkpoint_copy(tiny_checkpoint, tmp_path, truncate)
    out = tmp_path / "out"
    assert_one_line_error(cli("encode", *encode_args(corpus, ckpt, out)), str(ckpt / "model.safetensors"),
                          "truncated")
    assert not out.exists() and leftovers(out) == []


def test_d13_encoder_of_another_dense_size_is_named(corpus, index, tmp_path):
    other = build_tiny_checkpoint(tmp_path / "d16", dense_dim=16)
    run = tmp_path / "run.trec"
    proc = cli("search", *search_args(index, corpus, run, "--mode", "dense", "--encoder", other))
    assert_one_line_error(proc, "--encoder", "16-d", "32-d")
    assert not run.exists()


# ------------------------------------------------------------------------------------------------
# D14: messages point at the real cause
# ------------------------------------------------------------------------------------------------
def test_d14_document_id_over_lucenes_term_limit_is_named_at_read_time(corpus, tiny_checkpoint, tmp_path):
    folder = tmp_path / "longid"
    folder.mkdir()
    lines = (corpus / "corpus.jsonl").read_text().splitlines(keepends=True)[:4]
    lines.insert(2, json.dumps({"_id": "x" * 36_000, "text": "a document with an immense id"}) + "\n")
    (folder / "corpus.jsonl").write_text("".join(lines))
    out = tmp_path / "out"
    proc = cli("encode", *encode_args(folder, tiny_checkpoint, out))
    line = assert_one_line_error(proc, f"{folder / 'corpus.jsonl'}:3", "field 'id'", "32766 bytes")
    assert "disk" not in line


def test_d14_malformed_config_json_is_named(corpus, tiny_checkpoint, tmp_path):
    ckpt = checkpoint_copy(tiny_checkpoint, tmp_path, lambda c: (c / "config.json").write_text("{broken"))
    line = assert_one_line_error(cli("encode", *encode_args(corpus, ckpt, tmp_path / "out")),
                                 str(ckpt / "config.json"), "malformed JSON")
    assert "safetensors" not in line


def test_d14_file_size_error_names_the_file(corpus, index, tmp_path):
    run = tmp_path / "run.trec"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    proc = cli("search", *search_args(index, corpus, run, "--mode", "dense"), preexec_fn=limit)
    assert_one_line_error(proc, str(run), "File too large")


def test_d14_overwrite_onto_encoded_queries_names_what_is_there(corpus, tiny_checkpoint, tmp_path):
    queries = tmp_path / "q"
    proc = cli("encode", "--topics", corpus / "queries.jsonl", "--encoder", tiny_checkpoint, "--output", queries)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = cli("encode", *encode_args(corpus, tiny_checkpoint, queries, "--overwrite"))
    line = assert_one_line_error(proc, str(queries), "holds a folder of encoded queries", "not a dupmae_ir index")
    assert "did not write" not in line
    assert (queries / "dupmae_queries.json").is_file()


# ------------------------------------------------------------------------------------------------
# D18, D19: a collection is named by what resolves, and the flag decides what a file is
# ------------------------------------------------------------------------------------------------
def test_d18_index_of_a_collection_object_records_a_resolvable_corpus(corpus, tiny_checkpoint, tmp_path):
    from dupmae_ir.data import resolve
    from dupmae_ir.encode import encode_corpus

    out = encode_corpus(resolve(str(corpus)), tmp_path / "idx", encoder=str(tiny_checkpoint), dtype="fp32",
                        impact=False, progress=False)  # as the recipe calls it
    recorded = json.loads((out / "dupmae_index.json").read_text())["corpus"]
    assert resolve(recorded).path.resolve() == corpus.resolve()
    # indexes written before the fix recorded the repr: readers (serve, explain) resolve it too
    for name in ("default", str(corpus)):
        assert resolve(repr(resolve(name))).path.resolve() == resolve(name).path.resolve()


def test_d19_topics_flag_decides_that_a_jsonl_file_holds_queries(corpus, index, tmp_path):
    topics = tmp_path / "q.jsonl"  # a BEIR queries file whose name says neither "queries" nor "topics"
    shutil.copy(corpus / "queries.jsonl", topics)
    run = tmp_path / "run.trec"
    proc = cli("search", "--index", index, "--topics", topics, "--output", run, "--mode", "dense", "--hits", 5)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len({line.split()[0] for line in run.read_text().splitlines()}) == 6


@pytest.mark.parametrize("module, flag, value", [
    ("pretrain", "--batch-size", "0"), ("pretrain", "--learning-rate", "nan"),
    ("pretrain", "--encoder-mlm-probability", "1.5"), ("pretrain", "--max-seq-length", "1"),
    ("finetune", "--group-size", "0"), ("finetune", "--temperature", "-1"), ("finetune", "--warmup-ratio", "2"),
    ("finetune", "--holdout-fraction", "1"), ("finetune", "--doc-max-length", "inf"),
])
def test_training_numbers_out_of_range_are_one_line_before_any_work(tmp_path, module, flag, value):
    out = tmp_path / "out"
    r = cli(module, flag, value, "--output-dir", out)
    assert_one_line_error(r, flag, repr(value))
    assert not out.exists()


def test_training_arguments_built_in_python_check_their_numbers_too():
    from dupmae_ir.train.arguments import FinetuneArguments, PretrainArguments

    FinetuneArguments(group_size=4, holdout_fraction=0.2)  # in range: accepted
    for cls, field, value in ((FinetuneArguments, "learning_rate", -1e-5), (FinetuneArguments, "mine_skip", -1),
                              (PretrainArguments, "decoder_mlm_probability", 0.0)):
        with pytest.raises(ValueError, match=f"^{field}="):
            cls(**{field: value})
