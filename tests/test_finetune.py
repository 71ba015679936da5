"""Fine-tuning (issue 5): the three stages on tiny random models and a small synthetic BEIR folder;
the loss values against hand computations; resume; negatives shared across 2 gloo processes."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_checkpoint, run_cli

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
         "whiskey", "xray", "yankee", "zulu", "apple", "banana", "cherry", "grape", "lemon", "mango"]


def make_collection(folder: Path, n_docs: int = 32, n_queries: int = 16, seed: int = 0) -> Path:
    """A BEIR folder: doc i mentions its key word three times among filler; query i asks for key i."""
    rng = random.Random(seed)
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for i in range(n_docs):
            filler = rng.sample(WORDS, 6)
            text = f"{WORDS[i % len(WORDS)]} " + " ".join(filler) + f" {WORDS[i % len(WORDS)]} number {i}"
            fh.write(json.dumps({"_id": f"d{i}", "title": f"about {WORDS[i % len(WORDS)]}", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for i in range(n_queries):
            fh.write(json.dumps({"_id": f"q{i}", "text": f"what about {WORDS[i % len(WORDS)]}"}) + "\n")
    with open(folder / "qrels" / "train.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\r\n")
        for i in range(n_queries):
            fh.write(f"q{i}\td{i}\t1\r\n")
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_collection(tmp_path_factory.mktemp("toy") / "beir")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tinyft") / "ckpt", seed=1)


def _args(tiny, toy, out, **kw):
    from dupmae_ir.train.arguments import FinetuneArguments

    base = dict(model_name_or_path=str(tiny), train=str(toy), output_dir=str(out), batch_size=4, group_size=2,
                query_max_length=16, doc_max_length=32, learning_rate=1e-3, num_train_epochs=1,
                logging_steps=1, disable_tqdm=True, warmup_ratio=0.0, mine_depth=10)
    base.update(kw)
    return FinetuneArguments(**base)


def _losses(out: Path, key: str = "loss") -> list[float]:
    prov = json.loads((out / "dupmae_finetune.json").read_text())
    return [h[key] for h in prov["log_history"] if key in h]


# ----------------------------------------------------------------------------------------------
# losses against hand computations
# ----------------------------------------------------------------------------------------------
def test_distillation_loss_equals_hand_computed_value():
    from dupmae_ir.modeling.losses import distillation_loss

    student = torch.tensor([[2.0, 1.0, 0.0]])
    teacher = torch.tensor([[0.0, math.log(3.0), 0.0]])  # teacher softmax = (1/5, 3/5, 1/5)
    pt = [0.2, 0.6, 0.2]
    z = math.exp(2) + math.exp(1) + 1.0
    log_ps = [2 - math.log(z), 1 - math.log(z), -math.log(z)]
    kl = sum(p * (math.log(p) - lp) for p, lp in zip(pt, log_ps))
    ce = -sum(p * lp for p, lp in zip(pt, log_ps))
    assert distillation_loss(student, teacher, kind="kl").item() == pytest.approx(kl, rel=1e-6)
    assert distillation_loss(student, teacher, kind="ce").item() == pytest.approx(ce, rel=1e-6)
    # temperatures divide the scores: T=2 on the student equals halving its scores
    assert distillation_loss(student, teacher, temperature=2.0).item() == pytest.approx(
        distillation_loss(student / 2, teacher).item(), rel=1e-6)
    with pytest.raises(ValueError, match="valid"):
        distillation_loss(student, teacher, kind="mse")


def test_contrastive_loss_and_combined_score_by_hand():
    from dupmae_ir.modeling.losses import combined_scores, contrastive_loss, flops_regularizer

    qd, dd = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    qb, db = torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    s = combined_scores(qd, qb, dd, db, dense_weight=1.0, sparse_weight=0.5)
    assert s.tolist() == [[2.0, 0.0]]
    assert combined_scores(qd, qb, dd, db, sparse_weight=0.0).tolist() == [[1.0, 0.0]]
    assert contrastive_loss(s, group_size=2).item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)))
    # the positive of query 0 at offset 1 (second process) is column 1 * group_size
    s2 = torch.tensor([[0.0, 0.0, 3.0, 0.0]])
    assert contrastive_loss(s2, group_size=2, offset=1).item() == pytest.approx(
        -math.log(math.exp(3) / (math.exp(3) + 3)))
    w = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    assert flops_regularizer(w).item() == pytest.approx(2.0 ** 2 + 1.0 ** 2)


def test_part_loss_adds_each_part_trained_alone(tiny, toy, tmp_path):
    """--part-loss-weight w: loss = CE(dense + sparse) + w * (CE(dense) + CE(sparse)), on the model's own
    representations, for the contrastive stages and for distillation."""
    import torch.nn.functional as F

    from dupmae_ir.modeling.biencoder import BiEncoderForTraining
    from dupmae_ir.modeling.model import DupMAEModel

    retriever, tok = DupMAEModel.from_pretrained(tiny)
    q = tok(["what about alpha", "what about bravo"], return_tensors="pt", padding=True)
    d = tok(["alpha alpha echo", "golf hotel", "bravo kilo bravo", "lima mike"], return_tensors="pt", padding=True)
    with torch.no_grad():
        qd, qb = retriever(q["input_ids"], q["attention_mask"])
        dd, db = retriever(d["input_ids"], d["attention_mask"])
    dense, sparse = qd @ dd.T, 0.5 * (qb @ db.T)  # (2, 4)
    target = torch.tensor([0, 2])
    teacher = torch.tensor([[3.0, 0.0], [1.0, 2.0]])
    def groups(s):  # each query's own group (stage 3)
        return torch.stack([s[0, :2], s[1, 2:]])

    def kl(s):
        return F.kl_div(F.log_softmax(groups(s), -1), F.log_softmax(teacher, -1), log_target=True,
                        reduction="batchmean")
    for w in (0.0, 0.7):
        args = _args(tiny, toy, tmp_path, sparse_weight=0.5, part_loss_weight=w)
        model = BiEncoderForTraining(retriever, args.group_size, sparse_weight=args.sparse_weight,
                                     part_loss_weight=args.part_loss_weight)
        model.eval()
        with torch.no_grad():
            out = model(q["input_ids"], q["attention_mask"], d["input_ids"], d["attention_mask"])
            out3 = model(q["input_ids"], q["attention_mask"], d["input_ids"], d["attention_mask"],
                         teacher_scores=teacher)
        want = F.cross_entropy(dense + sparse, target) + w * (F.cross_entropy(dense, target)
                                                              + F.cross_entropy(sparse, target))
        assert out["loss"].item() == pytest.approx(want.item(), rel=1e-5)
        want3 = kl(dense + sparse) + w * (kl(dense) + kl(sparse))
        assert out3["loss"].item() == pytest.approx(want3.item(), rel=1e-5)
        assert ("sparse_contrastive_loss" in out) == bool(w)
    with pytest.raises(ValueError, match="both parts"):
        _args(tiny, toy, tmp_path, sparse_weight=0.0, part_loss_weight=1.0)


@pytest.mark.parametrize("bias_shift", [-2.0, 2.0])  # few active entries (sparse route), most (dense route)
def test_training_bag_of_words_equals_plain_autograd(tiny, bias_shift):
    """With gradients on, DupMAEModel pools through the fused head (bow.max_pool_linear_with_mlm:
    bias after the max; the max's gradient gathered per active entry when few are active, else through
    the matrix products). Its bag-of-words and every parameter's gradient equal plain autograd through
    the unfused head (bow.max_pool_head), for ReLU'd vectors (inactive entries carry no gradient) of
    texts of unequal length (padding)."""
    from dupmae_ir.modeling.bow import activate, max_pool_head
    from dupmae_ir.modeling.model import DupMAEModel

    retriever, tok = DupMAEModel.from_pretrained(tiny)
    retriever.eval()  # no dropout: both passes see the same network
    with torch.no_grad():
        retriever.mlm.cls.predictions.bias.normal_(bias_shift, 1.0, generator=torch.Generator().manual_seed(1))
    enc = tok(["alpha alpha echo golf", "bravo", "kilo lima mike november oscar papa"], return_tensors="pt",
              padding=True)
    probe = torch.randn(3, retriever.mlm.config.vocab_size, generator=torch.Generator().manual_seed(0))
    names, params = zip(*[(n, p) for n, p in retriever.named_parameters() if p.requires_grad])

    def grads(bow):
        loss = (bow * probe).sum() + (bow[0] * bow[2]).sum()  # a linear and a product term
        return torch.autograd.grad(loss, params, allow_unused=True)

    dense, bow = retriever(enc["input_ids"], enc["attention_mask"])
    hidden = retriever.mlm.bert(**enc).last_hidden_state
    ref = activate(max_pool_head(hidden, enc["attention_mask"], retriever.mlm.cls, 2), "plain_relu")
    ref = ref.masked_fill(retriever.special_mask, 0.0)
    active = float((bow > 0).float().mean())
    assert (0 < active < 0.25) if bias_shift < 0 else (active > 0.25)  # the route this case is for
    assert torch.allclose(bow, ref, atol=1e-5)
    for name, got, want in zip(names, grads(bow), grads(ref)):
        if want is None:
            assert got is None or not got.any(), name
        else:
            assert got is not None and float((got - want).abs().max()) <= 1e-5 * float(want.abs().max()) + 1e-6, name


# ----------------------------------------------------------------------------------------------
# stages
# ----------------------------------------------------------------------------------------------
def test_stage1_bm25_negatives_loss_falls_and_checkpoint_loads(tiny, toy, tmp_path):
    from dupmae_ir.modeling.model import DupMAEModel, RepresentationConfig
    from dupmae_ir.train.finetuning import run_finetuning

    out = run_finetuning(_args(tiny, toy, tmp_path / "s1", num_train_epochs=12, sparse_weight=0.01))
    losses = _losses(out)
    assert len(losses) >= 40
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.6 * first, losses
    # BM25 negatives were mined, never positives
    negs = [line.split("\t") for line in (out / "negatives.tsv").read_text().splitlines()]
    assert negs and all(d != "d" + q[1:] for q, d in negs)
    cfg = RepresentationConfig.load(out)
    assert cfg.finetuning["stage"] == 1 and cfg.finetuning["negatives"] == "bm25"
    assert cfg.doc_max_length == 32 and cfg.query_max_length == 16
    model, tok = DupMAEModel.from_pretrained(out)
    enc = tok(["what about alpha"], return_tensors="pt")
    dense, bow = model(enc["input_ids"], enc["attention_mask"])
    assert dense.shape == (1, 32) and bow.shape == (1, 30522)
    # the encoder alone is a plain HF checkpoint (what stock Pyserini's AutoDocumentEncoder reads)
    from transformers import AutoModel

    AutoModel.from_pretrained(out)


def test_head_learning_rate_trains_the_head_and_spares_the_encoder(tiny, toy, tmp_path):
    """--head-learning-rate: with the encoder's learning rate at 0 only the MLM head moves."""
    from safetensors.torch import load_file

    from dupmae_ir.modeling.model import RepresentationConfig
    from dupmae_ir.train.finetuning import run_finetuning

    out = run_finetuning(_args(tiny, toy, tmp_path / "h", max_steps=3, learning_rate=0.0,
                               head_learning_rate=1e-2, warmup_ratio=0.0, sparse_weight=1.0))
    start, end = load_file(str(tiny / "model.safetensors")), load_file(str(out / "model.safetensors"))
    body = [k for k in start if k.startswith("bert.")]
    head = [k for k in start if k.startswith("cls.predictions.transform.")]
    assert body and head
    assert all(torch.equal(start[k], end[k]) for k in body)
    assert all(not torch.equal(start[k], end[k]) for k in head)
    assert RepresentationConfig.load(out).finetuning["head_learning_rate"] == 1e-2


def test_stage2_negatives_mined_by_the_model_exclude_positives(tiny, toy, tmp_path):
    from dupmae_ir.data import resolve
    from dupmae_ir.train.finetuning import run_finetuning
    from dupmae_ir.train.mining import mine_with_model

    out = run_finetuning(_args(tiny, toy, tmp_path / "s2", stage=2, mine_depth=5, group_size=3))
    pairs = [line.split("\t") for line in (out / "negatives.tsv").read_text().splitlines()]
    by_q: dict[str, list[str]] = {}
    for q, d in pairs:
        by_q.setdefault(q, []).append(d)
    coll = resolve(str(toy))
    run = mine_with_model(str(tiny), coll, coll.queries("train"), depth=6, doc_max_length=32, query_max_length=16,
                          progress=False)
    for q, negs in by_q.items():
        pos = "d" + q[1:]
        assert pos not in negs
        expected = [d for d, _ in run[q][:5] if d != pos]
        assert negs == expected  # the model's own top-N with the positive removed
    assert json.loads((out / "dupmae_config.json").read_text())["finetuning"]["negatives"] == "model"


def test_exact_retriever_bf16_encoding_stays_close_to_fp32(tiny, toy):
    """``ExactSearcher(dtype="bf16")`` (the recipe's ``--eval-precision bf16``) encodes under
    autocast: the vectors change, yet stay within bf16 rounding of fp32, and the rankings agree."""
    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.modeling.model import DupMAEModel
    from dupmae_ir.search.exact import ExactSearcher

    coll = resolve(str(toy))
    docs = {d.id: doc_text(d) for d in coll.iter_docs()}
    queries = coll.queries("train")
    got = {}
    for dtype in ("fp32", "bf16"):
        model, tok = DupMAEModel.from_pretrained(tiny)
        r = ExactSearcher(model, tok, doc_max_length=32, query_max_length=16, dtype=dtype, device="cpu")
        r.index(list(docs), list(docs.values()), progress=False)
        got[dtype] = (r.dense[torch.argsort(torch.tensor([int(d[1:]) for d in r.doc_ids]))],
                      r.search(queries, k=5))
    (d32, run32), (d16, run16) = got["fp32"], got["bf16"]
    assert d16.dtype == torch.float32 and not torch.equal(d16, d32)  # autocast did run, scores stay fp32
    assert torch.nn.functional.cosine_similarity(d16, d32).min() > 0.99
    for mode in ("dense", "impact", "hybrid"):
        agree = sum(run16[mode][q][0][0] == run32[mode][q][0][0] for q in queries) / len(queries)
        assert agree >= 0.75, (mode, agree)
    model, tok = DupMAEModel.from_pretrained(tiny)
    with pytest.raises(ValueError, match="dtype"):
        ExactSearcher(model, tok, dtype="int8")


def test_sparse_scale_calibration_rescales_to_the_best_in_batch_loss(tiny, toy, tmp_path):
    """``--sparse-scale-calibration`` multiplies every sparse score by one factor s (rankings kept), and s
    minimises the sparse part's in-batch loss: scaling further either way raises it (the loss is convex in s)."""
    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.modeling.calibration import calibrate_sparse, calibrate_sparse_scale
    from dupmae_ir.modeling.model import DupMAEModel, RepresentationConfig
    from dupmae_ir.train.finetuning import run_finetuning

    coll = resolve(str(toy))
    docs = {d.id: doc_text(d) for d in coll.iter_docs()}
    queries = coll.queries("train")
    qids = sorted(queries)
    texts_q, texts_d = [queries[q] for q in qids], [docs["d" + q[1:]] for q in qids]
    retriever, tok = DupMAEModel.from_pretrained(tiny)
    calibrate_sparse(retriever, tok, list(docs.values()), 0.2, 32)

    def sparse_scores():
        retriever.eval()
        with torch.no_grad():
            q = tok(texts_q, max_length=16, truncation=True, padding=True, return_tensors="pt")
            d = tok(texts_d, max_length=32, truncation=True, padding=True, return_tensors="pt")
            return (retriever(q["input_ids"], q["attention_mask"])[1]
                    @ retriever(d["input_ids"], d["attention_mask"])[1].T)

    ce = lambda s: torch.nn.functional.cross_entropy(s, torch.arange(len(s))).item()  # noqa: E731
    before = sparse_scores()
    scale = calibrate_sparse_scale(retriever, tok, texts_q, texts_d, 16, 32)
    after = sparse_scores()
    assert 1e-4 < scale < 1e4 and abs(scale - 1) > 0.05  # inside the grid, and it did rescale
    assert torch.allclose(after, scale * before, rtol=1e-3, atol=1e-4)
    assert ce(after) <= ce(before) and ce(after) <= ce(after * 1.25) and ce(after) <= ce(after / 1.25)
    retriever.config = retriever.config.__class__(**{**retriever.config.__dict__, "activation": "log1p_relu"})
    with pytest.raises(ValueError, match="relu"):
        calibrate_sparse_scale(retriever, tok, texts_q, texts_d, 16, 32)
    out = run_finetuning(_args(tiny, toy, tmp_path / "scaled", sparse_calibration=0.2, sparse_scale_calibration=True,
                               max_steps=2))
    assert RepresentationConfig.load(out).finetuning["sparse_scale_calibration"] > 0


def test_stage3_distillation_runs(tiny, toy, tmp_path):
    from dupmae_ir.train.finetuning import run_finetuning

    teacher = tmp_path / "teacher.tsv"
    with open(teacher, "w") as fh:
        for i in range(16):
            fh.write(f"q{i}\td{i}\t5.0\n")
            for j in (i + 1, i + 2, i + 3):
                fh.write(f"q{i}\td{j % 32}\t{-float(j - i)}\n")
    out = run_finetuning(_args(tiny, toy, tmp_path / "s3", stage=3, teacher_scores=str(teacher), group_size=3,
                               num_train_epochs=6))
    losses = _losses(out, "distill_loss")
    assert losses and all(x >= 0 for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_dropout_option_and_auto_precision(tiny, toy, tmp_path):
    """--dropout 0 turns every dropout of the backbone off while training (a train-mode forward is then
    deterministic and equals eval mode); the saved config keeps the checkpoint's rate; --precision
    auto is recorded as the concrete precision this machine resolved it to."""
    from dupmae_ir.modeling.model import DupMAEModel, RepresentationConfig
    from dupmae_ir.precision import cpu_has_fast_bf16
    from dupmae_ir.train.arguments import FinetuneArguments
    from dupmae_ir.train.finetuning import run_finetuning
    from dupmae_ir.train.trainer import set_dropout

    retriever, tok = DupMAEModel.from_pretrained(tiny)
    enc = tok(["alpha bravo charlie delta echo"], return_tensors="pt")
    retriever.train()
    torch.manual_seed(0)
    noisy = retriever(enc["input_ids"], enc["attention_mask"])[0]
    assert set_dropout(retriever, 0.0) >= 3
    a, b = (retriever(enc["input_ids"], enc["attention_mask"])[0] for _ in range(2))
    retriever.eval()
    assert torch.equal(a, b) and torch.allclose(a, retriever(enc["input_ids"], enc["attention_mask"])[0], atol=1e-6)
    assert not torch.allclose(noisy, a, atol=1e-4)  # the checkpoint's own dropout was on
    with pytest.raises(ValueError, match="dropout"):
        FinetuneArguments(dropout=1.0)

    out = run_finetuning(_args(tiny, toy, tmp_path / "d", max_steps=2, dropout=0.0, precision="auto"))
    record = RepresentationConfig.load(out).finetuning
    assert record["dropout"] == 0.0
    assert record["precision"] == ("bf16" if cpu_has_fast_bf16() else "fp32")
    saved = json.loads((out / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == json.loads((tiny / "config.json").read_text())["hidden_dropout_prob"] > 0


def test_bad_input_errors(tiny, toy, tmp_path):
    from dupmae_ir.data import DataError
    from dupmae_ir.train.arguments import FinetuneArguments
    from dupmae_ir.train.finetuning import run_finetuning

    with pytest.raises(ValueError, match="teacher-scores"):
        FinetuneArguments(stage=3)
    with pytest.raises(ValueError, match="valid"):
        FinetuneArguments(mine="dense")
    bad = tmp_path / "neg.txt"
    bad.write_text("q1 d2 x y\n")
    with pytest.raises(DataError, match="neg.txt:1"):
        run_finetuning(_args(tiny, toy, tmp_path / "bad", negatives=str(bad)))


def test_resume_gives_the_same_model(tiny, toy, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from dupmae_ir.train.finetuning import run_finetuning

    kw = dict(max_steps=6, save_steps=3, mine="none", group_size=2)
    full = run_finetuning(_args(tiny, toy, tmp_path / "full", **kw))

    class StopAt3(TrainerCallback):
        def on_step_end(self, args, state, control, **k):
            if state.global_step == 3:
                control.should_training_stop = True
                control.should_save = True

    part = tmp_path / "part"
    run_finetuning(_args(tiny, toy, part, **kw), callbacks=[StopAt3()])
    assert (part / "checkpoints" / "checkpoint-3").is_dir()
    run_finetuning(_args(tiny, toy, part, resume=True, **kw))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    prov = json.loads((part / "dupmae_finetune.json").read_text())
    assert prov["resumed_from"].endswith("checkpoint-3")


def test_cli_help_has_groups():
    proc = run_cli("finetune", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for section in ("model:", "data:", "loss:", "optimisation:", "run control:", "--stage", "--group-size",
                    "--teacher-scores", "--flops-doc"):
        assert section in out


@pytest.mark.slow
def test_torchrun_two_gloo_processes_share_negatives(tiny, toy, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    common = ["--model-name-or-path", str(tiny), "--train", str(toy), "--batch-size", "2", "--group-size", "2",
              "--query-max-length", "16", "--doc-max-length", "32", "--max-steps", "2", "--mine", "none",
              "--logging-steps", "1", "--disable-tqdm", "--use-cpu"]
    outs = {}
    for share in ("true", "false"):
        out = tmp_path / f"ddp-{share}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(29500 + random.randrange(1000)), "-m", "dupmae_ir.finetune", *common,
               "--share-negatives", share, "--output-dir", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[share] = json.loads((out / "dupmae_finetune.json").read_text())
    assert outs["true"]["finetuning"]["world_size"] == 2
    cand = [h["candidates"] for h in outs["true"]["log_history"] if "candidates" in h]
    solo = [h["candidates"] for h in outs["false"]["log_history"] if "candidates" in h]
    assert cand and all(c == 2 * 2 * 2 for c in cand)  # world x batch x group documents per query
    assert solo and all(c == 2 * 2 for c in solo)


@pytest.mark.slow
def test_torchrun_stage2_encodes_and_mines_together(tiny, toy, tmp_path):
    """Stage 2 under torchrun: both processes encode a share of the corpus into one index and search a
    share of the queries; the negatives equal a one-process run mining from a one-process index."""
    from dupmae_ir.encode import encode_corpus
    from dupmae_ir.train.finetuning import run_finetuning

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = tmp_path / "ddp-s2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + random.randrange(1000)), "-m", "dupmae_ir.finetune", "--stage", "2",
           "--model-name-or-path", str(tiny), "--train", str(toy), "--batch-size", "2", "--group-size", "2",
           "--query-max-length", "16", "--doc-max-length", "32", "--max-steps", "1", "--mine-depth", "5",
           "--disable-tqdm", "--use-cpu", "--output-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = json.loads((out / "mine-index" / "dupmae_index.json").read_text())
    assert index["world_size"] == 2 and sum(r["docs"] for r in index["ranks"]) == index["docs"] == 32
    assert json.loads((out / "dupmae_finetune.json").read_text())["finetuning"]["mine_index"] == str(out / "mine-index")

    solo_index = encode_corpus(str(toy), tmp_path / "solo-index", encoder=str(tiny), doc_max_length=32,
                               progress=False)
    solo = run_finetuning(_args(tiny, toy, tmp_path / "solo", stage=2, mine_depth=5, max_steps=1,
                                mine_index=str(solo_index)))
    lines = (out / "negatives.tsv").read_text().splitlines()
    assert len(lines) > 16 and lines == (solo / "negatives.tsv").read_text().splitlines()


def test_bow_loss_by_hand_and_added_to_the_stage_loss(tiny):
    """--bow-loss-weight w: loss = stage loss + w * (L_bow(queries) + L_bow(passages)), L_bow of each text
    against its own pieces (specials and padding out, counts normalised to sum to 1)."""
    import torch.nn.functional as F

    from dupmae_ir.modeling.biencoder import BiEncoderForTraining
    from dupmae_ir.modeling.losses import own_bag_of_words_loss
    from dupmae_ir.modeling.model import DupMAEModel

    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.5, -1.0]])  # V = 6; 0: pad, 1: special
    special = torch.tensor([True, True, False, False, False, False])
    ids, mask = torch.tensor([[1, 3, 2, 3, 1, 4]]), torch.tensor([[1, 1, 1, 1, 1, 0]])  # piece 4 under padding
    log_p = F.log_softmax(logits, -1)[0]
    want = -(log_p[2] / 3 + 2 * log_p[3] / 3)  # piece 3 twice, piece 2 once; [CLS]/[SEP] (1) and padding out
    assert own_bag_of_words_loss(logits, ids, mask, special).item() == pytest.approx(want.item(), rel=1e-6)
    empty = (torch.tensor([[1, 1, 0, 0, 0, 0]]), torch.tensor([[1, 1, 0, 0, 0, 0]]))  # specials only: left out
    both = own_bag_of_words_loss(logits.repeat(2, 1), torch.cat([ids, empty[0]]), torch.cat([mask, empty[1]]), special)
    assert both.item() == pytest.approx(want.item(), rel=1e-6)

    retriever, tok = DupMAEModel.from_pretrained(tiny)
    q = tok(["what about alpha", "what about bravo"], return_tensors="pt", padding=True)
    d = tok(["alpha alpha echo", "golf hotel", "bravo kilo bravo", "lima mike"], return_tensors="pt", padding=True)
    batch = (q["input_ids"], q["attention_mask"], d["input_ids"], d["attention_mask"])
    with torch.no_grad():
        *_, q_mu = retriever(q["input_ids"], q["attention_mask"], with_logits=True)
        *_, d_mu = retriever(d["input_ids"], d["attention_mask"], with_logits=True)
        plain = BiEncoderForTraining(retriever, 2).eval()(*batch)
        kept = BiEncoderForTraining(retriever, 2, bow_loss_weight=0.3).eval()(*batch)
    q_own = own_bag_of_words_loss(q_mu, q["input_ids"], q["attention_mask"], retriever.special_mask)
    d_own = own_bag_of_words_loss(d_mu, d["input_ids"], d["attention_mask"], retriever.special_mask)
    assert kept["bow_loss_query"].item() == pytest.approx(q_own.item(), rel=1e-5)
    assert kept["loss"].item() == pytest.approx((plain["loss"] + 0.3 * (q_own + d_own)).item(), rel=1e-5)
    assert "bow_loss_query" not in plain


def test_bow_loss_grounds_the_query_expansion(tiny, toy, tmp_path):
    """Minimising the bag-of-words loss puts a query's heaviest terms on its own pieces (grounded share, as
    bench/bow_grounding.py measures it); through finetune the weight is recorded and the logged loss falls."""
    from dupmae_ir.modeling.bow import grounded_share
    from dupmae_ir.modeling.losses import own_bag_of_words_loss
    from dupmae_ir.modeling.model import DupMAEModel
    from dupmae_ir.train.finetuning import run_finetuning

    retriever, tok = DupMAEModel.from_pretrained(tiny)
    enc = tok([f"what about {w}" for w in WORDS[:16]], return_tensors="pt", padding=True)
    own = [set(row.tolist()) for row in enc["input_ids"]]

    def share() -> float:
        with torch.no_grad():
            _, bow = retriever(enc["input_ids"], enc["attention_mask"])
        return sum(s or 0.0 for s in grounded_share(bow, own)) / len(own)

    before = share()
    optimizer = torch.optim.Adam(retriever.parameters(), lr=1e-2)
    for _ in range(60):
        *_, logits = retriever(enc["input_ids"], enc["attention_mask"], with_logits=True)
        loss = own_bag_of_words_loss(logits, enc["input_ids"], enc["attention_mask"], retriever.special_mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before < 0.1 and share() > 0.3, (before, share())

    out = run_finetuning(_args(tiny, toy, tmp_path / "kept", bow_loss_weight=1.0, num_train_epochs=3))
    assert json.loads((out / "dupmae_finetune.json").read_text())["finetuning"]["bow_loss_weight"] == 1.0
    losses = _losses(out, "bow_loss_query")
    assert len(losses) > 2 and losses[-1] < losses[0]
