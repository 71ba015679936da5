"""DupMAE bi-encoder fine-tuning on the Hugging Face Trainer (paper section 4; DUPMAE.md section 4).

Every stage trains the combined score of :class:`~dupmae_ir.modeling.retriever.DupMAERetriever`::

    s(q, d) = w_dense * h_q . h_d + w_sparse * mu_q . mu_d        (paper: w_dense = w_sparse = 1)

- stage 1: contrastive loss over {d+} U in-batch documents U negatives from a file or mined with
  Pyserini BM25 (:mod:`dupmae_ir.bm25`);
- stage 2: the same loss with hard negatives mined by the stage-1 model itself (top-N of the toolkit's
  own retrieval, positives removed): pass the stage-1 checkpoint as ``model_name_or_path``;
- stage 3: distillation, KL (or soft-label CE) from the teacher's softmax over {d+} U hard negatives
  (teacher scores from a file) to the student's.

Under ``torchrun`` the documents of every process are gathered (the local part keeps its gradient), so
each query sees the negatives of the whole global batch; the loss is multiplied by the world size to
undo DDP's gradient averaging. Options: group size, temperature, query/passage lengths, FLOPS
regularisation, part weights, resumable checkpoints.

Front door: :func:`run_finetuning` (``FinetuneArguments`` -> path of the saved checkpoint); the CLI
``python -m dupmae_ir.finetune`` is a thin layer over it. Output folder: a ``DupMAERetriever``
checkpoint (HF masked LM, safetensors, tokenizer, ``dupmae_config.json`` with ``finetuning = {...}``;
its encoder alone is what stock Pyserini's ``--encoder-class auto --pooling cls`` reads),
``negatives.tsv`` (the negatives used, for reuse), ``dupmae_finetune.json`` (provenance, written
last), ``checkpoints/`` (Trainer checkpoints for ``resume``).
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .common import PRECISIONS, resolve_precision, resume_point, save_final_model, set_dropout, trainer_base, training_arguments

log = logging.getLogger(__name__)

STAGES = (1, 2, 3)
MINE_SOURCES = ("auto", "bm25", "model", "none")
PROVENANCE_NAME = "dupmae_finetune.json"
NEGATIVES_NAME = "negatives.tsv"


@dataclass
class FinetuneArguments:
    """Everything a fine-tuning run needs. Defaults run on a CPU (bundled SciFact train, MiniLM)."""

    # model
    model_name_or_path: str = field(default="default", metadata={"help": "Start checkpoint: 'default' (offline MiniLM-L6), a DupMAE pre-trained or stage-1/2 checkpoint folder, or a cached hub id."})
    stage: int = field(default=1, metadata={"choices": (1, 2, 3), "help": "1: in-batch + BM25/file negatives; 2: hard negatives mined by model_name_or_path; 3: distillation from --teacher-scores."})
    dense_dim: int | None = field(default=None, metadata={"help": "Add a learned projection D -> d' for the dense part (paper 384 for BERT-base); default: keep the checkpoint's."})
    activation: str | None = field(default=None, metadata={"help": "Bag-of-words activation: relu | log1p_relu | none (default: the checkpoint's)."})
    sparse_calibration: float | None = field(default=None, metadata={"help": "Before training, shift the MLM-head bias so that each vocabulary entry is active (mu > 0) in only this fraction of sampled documents (e.g. 0.05); makes the bag-of-words vector sparse from the start. Default: off."})
    sparse_scale_calibration: bool = field(default=False, metadata={"help": "Before training (after --sparse-calibration), scale the bag-of-words so that the sparse part alone starts at its lowest in-batch contrastive loss on a sample of training pairs (a scale grid, folded into the MLM head; relu only). A fresh or pre-trained head otherwise starts with sparse scores ~10x too large (loss ~7 against ~1 for the dense part), and the first steps' clipped gradients go to shrinking them at the encoder's expense. Default: off (the paper's start)."})
    # data
    train: str = field(default="default", metadata={"help": "Collection with training queries and qrels: 'default' (bundled SciFact), a BEIR folder, msmarco-passage, beir/<name>."})
    split: str = field(default="train", metadata={"help": "Split of the training queries/qrels."})
    corpus: str | None = field(default=None, metadata={"help": "Collection holding the documents (default: --train)."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of local BEIR collections tried first (e.g. ../shared/data/beir)."})
    max_queries: int | None = field(default=None, metadata={"help": "Use only the first N training queries (smoke runs)."})
    negatives: str | None = field(default=None, metadata={"help": "Negatives file: TREC run ('qid Q0 docid rank score tag') or TSV 'qid<TAB>docid'; judged positives are removed."})
    mine: str = field(default="auto", metadata={"help": "Where negatives come from without --negatives: auto (stage 1: bm25, stage 2: model), bm25, model (the start checkpoint's own retrieval), none (in-batch only)."})
    mine_depth: int = field(default=200, metadata={"help": "Negatives are sampled from each query's top-N (paper: 200), positives removed."})
    mine_skip: int = field(default=0, metadata={"help": "Skip the first N non-positive hits (guards against unjudged positives)."})
    mine_index: str | None = field(default=None, metadata={"help": "Stage 2 on large corpora: mine from this index of `python -m dupmae_ir.encode` (built with the stage-1 model) instead of exhaustive in-memory scoring."})
    mine_mode: str = field(default="hybrid", metadata={"help": "Score used for model mining: hybrid | dense | impact."})
    bm25_index: str | None = field(default=None, metadata={"help": "BM25 index folder for mining (built there if absent; default: OUTPUT/bm25-index)."})
    teacher_scores: str | None = field(default=None, metadata={"help": "Stage 3: teacher scores, lines 'qid docid score' (TSV or whitespace) or a TREC run; the group is {d+} U negatives of the file."})
    # loss
    group_size: int = field(default=8, metadata={"help": "Documents per query: 1 positive + (group_size - 1) negatives (paper 16)."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the student scores (paper 1)."})
    teacher_temperature: float = field(default=1.0, metadata={"help": "Stage 3: temperature of the teacher scores."})
    distill_loss: str = field(default="kl", metadata={"help": "Stage 3: kl | ce (soft-label cross-entropy)."})
    dense_weight: float = field(default=1.0, metadata={"help": "Weight of the dense inner product in the training score (0 isolates the sparse part)."})
    sparse_weight: float = field(default=1.0, metadata={"help": "Weight of the sparse inner product (0 isolates the dense part)."})
    part_loss_weight: float = field(default=0.0, metadata={"help": "Also train each part on its own: add this weight times the same loss computed on the dense scores alone plus on the sparse scores alone (as BGE-M3 does for its hybrid). 0: the paper's loss on the combined score only."})
    fold_sparse_weight: bool = field(default=True, metadata={"help": "With relu, fold sqrt(sparse_weight / dense_weight) into the MLM head at save time so the saved model's UNWEIGHTED sum (what search uses) equals the trained score."})
    flops_query: float = field(default=0.0, metadata={"help": "FLOPS regularisation weight on query bag-of-words vectors."})
    flops_doc: float = field(default=0.0, metadata={"help": "FLOPS regularisation weight on document bag-of-words vectors."})
    share_negatives: bool = field(default=True, metadata={"help": "Under torchrun, score every query against the documents of all processes."})
    query_max_length: int = field(default=32, metadata={"help": "Query pieces, specials included (paper 32)."})
    doc_max_length: int = field(default=144, metadata={"help": "Passage pieces, specials included (paper 140-150)."})
    # optimisation
    output_dir: str = field(default="encoders/dupmae-finetuned", metadata={"help": "Folder of the final checkpoint (checkpoints/ inside)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; <= 0 means use num_train_epochs."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the training queries (paper 4)."})
    batch_size: int = field(default=16, metadata={"help": "Queries per device per step (paper 16)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step (negatives are shared within a micro-batch only)."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (paper 2e-5)."})
    head_learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate of the parameters outside the backbone body (MLM-head transform and bias, dense projection). Default: --learning-rate for all (paper)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Linear warm-up fraction."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping."})
    precision: str = field(default="fp32", metadata={"help": "fp32 | bf16 (fast only on CPUs with native bf16 / Ampere+ GPUs) | fp16 (GPU) | auto (bf16 on GPUs and on CPUs with native bf16 instructions, AVX512-BF16/AMX; else fp32)."})
    dropout: float | None = field(default=None, metadata={"help": "Set every dropout of the backbone (hidden and attention) to this rate while training (0: off, ~1.7x faster step on CPUs, where dropout is slow and keeps attention off its fused kernel). Default: the checkpoint's (0.1 for BERT). Not saved: inference never drops."})
    seed: int = field(default=42, metadata={"help": "Seed of data order, negative sampling and init."})
    # run control
    logging_steps: int = field(default=10, metadata={"help": "Log the losses every N steps."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most N checkpoints."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir/checkpoints."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing finished model in output_dir."})
    encode_batch_size: int = field(default=32, metadata={"help": "Batch size of corpus encoding when mining with the model."})
    ddp_backend: str | None = field(default=None, metadata={"help": "torch.distributed backend under torchrun (default: nccl on GPU, gloo on CPU)."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is present."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r}; valid: {STAGES}")
        if self.mine not in MINE_SOURCES:
            raise ValueError(f"mine={self.mine!r}; valid: {MINE_SOURCES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; valid: {PRECISIONS}")
        from ..modeling.losses import DISTILL_LOSSES

        if self.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"distill_loss={self.distill_loss!r}; valid: {DISTILL_LOSSES}")
        if self.group_size < 1 or self.batch_size < 1:
            raise ValueError("group_size and batch_size must be >= 1")
        if not self.dense_weight and not self.sparse_weight:
            raise ValueError("dense_weight and sparse_weight are both 0: nothing to train")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}: must be in [0, 1)")
        if self.part_loss_weight < 0:
            raise ValueError(f"part_loss_weight={self.part_loss_weight}: must be >= 0")
        if self.part_loss_weight and not (self.dense_weight and self.sparse_weight):
            raise ValueError("part_loss_weight needs both parts (dense_weight and sparse_weight non-zero)")
        if self.stage == 3 and not self.teacher_scores:
            raise ValueError("stage 3 (distillation) needs --teacher-scores FILE (lines 'qid docid score').")
        if self.stage == 3 and self.group_size < 2:
            raise ValueError("stage 3 needs group_size >= 2 (a positive and at least one negative).")

    def mine_source(self) -> str:
        if self.negatives or self.stage == 3:
            return "file"
        if self.mine == "auto":
            return "bm25" if self.stage == 1 else "model"
        return self.mine


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainExample:
    """One training query: its judged positives, its negative pool and (stage 3) teacher scores."""

    qid: str
    query: str
    positives: list[str]
    negatives: list[str]
    teacher: dict[str, float] | None = None


def read_negatives_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{qid: [docid, ...]}`` in file order from a TREC run (6 columns) or ``qid<TAB>docid`` lines."""
    from ..data import DataError
    from ..data.readers import iter_lines

    out: dict[str, list[str]] = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if len(parts) == 6:
            qid, docid = parts[0], parts[2]
        elif len(parts) in (2, 3):
            qid, docid = parts[0], parts[1]
        else:
            raise DataError(f"{path}:{lineno}", f"expected a TREC run line 'qid Q0 docid rank score tag' or "
                                                f"'qid<TAB>docid', found {len(parts)} fields", "one negative per line")
        out.setdefault(qid, []).append(docid)
    return out


def read_teacher_scores(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` from lines ``qid docid score`` or a TREC run (score in column 5)."""
    from ..data import DataError
    from ..data.readers import iter_lines

    out: dict[str, dict[str, float]] = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if len(parts) == 3:
            qid, docid, score = parts
        elif len(parts) == 6:
            qid, docid, score = parts[0], parts[2], parts[4]
        else:
            raise DataError(f"{path}:{lineno}", f"expected 'qid docid score' or a TREC run line, found {len(parts)} fields",
                            "one teacher score per line")
        try:
            out.setdefault(qid, {})[docid] = float(score)
        except ValueError:
            raise DataError(f"{path}:{lineno}", f"score {score!r} is not a number", "write scores as numbers") from None
    return out


def write_negatives(path: Path, negatives: dict[str, list[str]]) -> None:
    from ..provenance import atomic_write_text

    atomic_write_text(path, "".join(f"{q}\t{d}\n" for q, docs in negatives.items() for d in docs))


def load_documents(corpus, doc_ids: set[str] | None = None, progress: bool = True) -> dict[str, str]:
    """``{docid: doc_text}`` of the documents in ``doc_ids`` (all when None), streamed once."""
    from tqdm import tqdm

    from ..data import doc_text

    docs = {}
    for doc in tqdm(corpus.iter_docs(), desc="read corpus", unit="doc", disable=not progress, mininterval=2):
        if doc_ids is None or doc.id in doc_ids:
            docs[doc.id] = doc_text(doc)
    return docs


def mine_with_bm25(corpus, queries: dict[str, str], depth: int, index_dir: Path, progress: bool = True):
    """Top-``depth`` BM25 hits per query with Pyserini (:mod:`dupmae_ir.bm25`); builds the index if absent."""
    from ..bm25 import bm25_search, build_bm25_index

    build_bm25_index(corpus, index_dir, progress=progress)
    return bm25_search(index_dir, queries, hits=depth, progress=progress)


def mine_with_model(model_name_or_path: str, corpus, queries: dict[str, str], depth: int, mode: str = "hybrid",
                    doc_max_length: int | None = None, query_max_length: int | None = None,
                    batch_size: int = 32, docs: dict[str, str] | None = None, progress: bool = True,
                    device: str | None = None):
    """Top-``depth`` hits per query retrieved by a DupMAE checkpoint over the whole corpus, exhaustive
    and in memory (:class:`~dupmae_ir.train.mining.ExactRetriever`) on ``device`` (default: the GPU
    when there is one)."""
    import torch

    from ..modeling.retriever import DupMAERetriever
    from .mining import ExactRetriever

    model, tokenizer = DupMAERetriever.from_pretrained(model_name_or_path)
    docs = docs if docs is not None else load_documents(corpus, progress=progress)
    retriever = ExactRetriever(model, tokenizer, doc_max_length=doc_max_length, query_max_length=query_max_length,
                               batch_size=batch_size, need_sparse=mode != "dense", device=device)
    with torch.inference_mode():
        retriever.index(list(docs), list(docs.values()), progress=progress)
        return retriever.search(queries, k=depth, modes=(mode,))[mode]


def build_examples(args: FinetuneArguments, output_dir: Path, progress: bool = True, device: str | None = None):
    """Training examples and the texts of every document they use: ``(examples, docs)``; model mining
    runs on ``device`` (the training device)."""
    from ..data import DataError, resolve
    from .mining import negatives_from_run

    coll = resolve(args.train, data_dir=args.data_dir)
    corpus = resolve(args.corpus or args.train, data_dir=args.data_dir)
    queries = coll.queries(args.split)
    qrels = coll.qrels(args.split)
    qids = [q for q in queries if any(r > 0 for r in qrels.get(q, {}).values())]
    if args.max_queries:
        qids = qids[:args.max_queries]
    if not qids:
        raise DataError(f"{args.train} split {args.split!r}", "no query has a judged positive (rel > 0)",
                        "pass a split with judgements (--split)")
    queries = {q: queries[q] for q in qids}

    source = args.mine_source()
    teacher = None
    all_docs = None
    if source == "file" and args.stage == 3:
        teacher = read_teacher_scores(args.teacher_scores)
        pools = {q: sorted(teacher.get(q, {}), key=lambda d: -teacher[q][d]) for q in qids}
    elif source == "file":
        pools = read_negatives_file(args.negatives)
    elif source == "bm25":
        index_dir = Path(args.bm25_index) if args.bm25_index else output_dir / "bm25-index"
        pools = {q: [d for d, _ in hits] for q, hits in
                 mine_with_bm25(corpus, queries, args.mine_depth + args.mine_skip + 5, index_dir, progress).items()}
    elif source == "model":
        if args.mine_index:
            from .mining import mine_from_index

            run = mine_from_index(args.mine_index, queries, args.mine_depth + args.mine_skip + 5, args.mine_mode,
                                  encoder=args.model_name_or_path)
        else:
            all_docs = load_documents(corpus, progress=progress)
            run = mine_with_model(args.model_name_or_path, corpus, queries, args.mine_depth + args.mine_skip + 5,
                                  args.mine_mode, args.doc_max_length, args.query_max_length,
                                  args.encode_batch_size, docs=all_docs, progress=progress, device=device)
        pools = {q: [d for d, _ in hits] for q, hits in run.items()}
    else:
        pools = {q: [] for q in qids}
    if source in ("bm25", "model"):
        pools = negatives_from_run({q: [(d, 0.0) for d in pools.get(q, [])] for q in qids}, qrels,
                                   args.mine_depth + args.mine_skip, args.mine_skip)
    examples = []
    for q in qids:
        positives = sorted(d for d, r in qrels[q].items() if r > 0)
        negs = [d for d in pools.get(q, []) if d not in set(positives)][:max(args.mine_depth, 1)]
        if teacher is not None:
            missing = [d for d in positives if d not in teacher.get(q, {})]
            positives = [d for d in positives if d in teacher.get(q, {})]
            if not positives:
                raise DataError(args.teacher_scores, f"query {q!r} has no teacher score for any of its positives "
                                                     f"{missing[:3]}", "stage 3 needs a teacher score for d+ and its negatives")
        examples.append(TrainExample(q, queries[q], positives, negs, teacher.get(q) if teacher else None))
    if args.stage == 3 and not any(e.negatives for e in examples):
        raise DataError(args.teacher_scores, "no teacher-scored negatives for the training queries",
                        "score each training query's candidates in the file")
    needed = {d for e in examples for d in (*e.positives, *e.negatives)}
    docs = {d: all_docs[d] for d in needed if d in all_docs} if all_docs is not None else load_documents(corpus, needed, progress)
    unknown = needed - set(docs)
    if unknown:
        log.warning("%d document id(s) of qrels/negatives are not in the corpus (e.g. %s); dropped",
                    len(unknown), sorted(unknown)[:3])
        for e in examples:
            e.positives = [d for d in e.positives if d in docs]
            e.negatives = [d for d in e.negatives if d in docs]
        examples = [e for e in examples if e.positives]
    if args.stage == 3:
        examples = [e for e in examples if e.negatives]
    return examples, docs, {q: negs for q, negs in ((e.qid, e.negatives) for e in examples)}


class GroupDataset:
    """Item i = query i with a group of ``group_size`` documents: one positive, then negatives sampled
    from its pool (without replacement while the pool lasts). The draw is a pure function of
    (seed, epoch, i), so a resumed run sees the same groups as an uninterrupted one."""

    def __init__(self, examples: list[TrainExample], docs: dict[str, str], group_size: int, seed: int = 42):
        self.examples = examples
        self.docs = docs
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0
        self._all_ids = sorted(docs)

    def __len__(self) -> int:
        return len(self.examples)

    def group(self, i: int) -> tuple[list[str], list[float] | None]:
        ex = self.examples[i]
        rng = random.Random(f"{self.seed}-{self.epoch}-{i}")
        pos = ex.positives[rng.randrange(len(ex.positives))]
        n = self.group_size - 1
        pool = ex.negatives
        if not pool and n:  # no negatives known: random corpus documents (not positives)
            pool = [d for d in rng.sample(self._all_ids, min(len(self._all_ids), n + len(ex.positives)))
                    if d not in ex.positives]
        negs = rng.sample(pool, n) if len(pool) >= n else [pool[rng.randrange(len(pool))] for _ in range(n)] if pool else []
        ids = [pos, *negs]
        teacher = [ex.teacher[d] for d in ids] if ex.teacher is not None else None
        return ids, teacher

    def __getitem__(self, i: int) -> dict:
        ids, teacher = self.group(i)
        item = {"query": self.examples[i].query, "docs": [self.docs[d] for d in ids]}
        if teacher is not None:
            item["teacher"] = teacher
        return item


class GroupCollator:
    """Tokenise a list of :class:`GroupDataset` items into query and document tensors."""

    def __init__(self, tokenizer, query_max_length: int, doc_max_length: int):
        self.tokenizer = tokenizer
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length

    def __call__(self, items: list[dict]) -> dict:
        import torch

        q = self.tokenizer([it["query"] for it in items], max_length=self.query_max_length, truncation=True,
                           padding=True, return_tensors="pt")
        d = self.tokenizer([t for it in items for t in it["docs"]], max_length=self.doc_max_length,
                           truncation=True, padding=True, return_tensors="pt")
        batch = {"query_input_ids": q["input_ids"], "query_attention_mask": q["attention_mask"],  # (B, Lq)
                 "doc_input_ids": d["input_ids"], "doc_attention_mask": d["attention_mask"]}  # (B*G, Ld)
        if "teacher" in items[0]:
            batch["teacher_scores"] = torch.tensor([it["teacher"] for it in items], dtype=torch.float32)  # (B, G)
        return batch


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
def gather_with_grad(t):
    """All-gather ``t`` (n, ...) from every process -> (world * n, ...); the local slice keeps its gradient."""
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    parts[dist.get_rank()] = t
    return torch.cat(parts)  # (world * n, ...)


def _make_bi_encoder_class():
    import torch
    from torch import nn

    from ..modeling.losses import combined_scores, contrastive_loss, distillation_loss, flops_regularizer
    from .mining import dense_only

    class BiEncoderForTraining(nn.Module):
        """A :class:`DupMAERetriever` plus the fine-tuning loss of its stage; ``forward`` returns a dict
        with ``loss`` and the logged terms."""

        def __init__(self, retriever, args: FinetuneArguments):
            super().__init__()
            self.retriever = retriever
            self.group_size = args.group_size
            self.stage = args.stage
            self.temperature = args.temperature
            self.teacher_temperature = args.teacher_temperature
            self.distill_kind = args.distill_loss
            self.dense_weight = args.dense_weight
            self.sparse_weight = args.sparse_weight
            self.part_loss_weight = args.part_loss_weight
            self.flops_query = args.flops_query
            self.flops_doc = args.flops_doc
            self.share_negatives = args.share_negatives
            self.need_sparse = bool(args.sparse_weight or args.flops_query or args.flops_doc)

        def encode(self, input_ids, attention_mask):
            if self.need_sparse:
                return self.retriever(input_ids, attention_mask)  # (n, d), (n, V)
            return dense_only(self.retriever, input_ids, attention_mask), None  # (n, d)

        def forward(self, query_input_ids, query_attention_mask, doc_input_ids, doc_attention_mask,
                    teacher_scores=None):
            q_dense, q_bow = self.encode(query_input_ids, query_attention_mask)  # (B, d), (B, V)
            d_dense, d_bow = self.encode(doc_input_ids, doc_attention_mask)  # (B*G, d), (B*G, V)
            b, g = q_dense.shape[0], self.group_size
            terms, scale = {}, 1.0
            if teacher_scores is not None:  # stage 3: each query against its own group
                def part_scores(dense_weight, sparse_weight):  # (B, G)
                    student = dense_weight * torch.einsum("bd,bgd->bg", q_dense, d_dense.view(b, g, -1))
                    if sparse_weight:
                        student = student + sparse_weight * torch.einsum("bv,bgv->bg", q_bow, d_bow.view(b, g, -1))
                    return student

                def part_loss(scores):
                    return distillation_loss(scores, teacher_scores, self.temperature, self.teacher_temperature,
                                             self.distill_kind)
                name = "distill_loss"
            else:
                offset = 0
                dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
                if self.share_negatives and dist_on and torch.distributed.get_world_size() > 1:
                    d_dense = gather_with_grad(d_dense)  # (W*B*G, d)
                    d_bow = gather_with_grad(d_bow) if d_bow is not None else None  # (W*B*G, V)
                    offset = torch.distributed.get_rank() * b
                    scale = float(torch.distributed.get_world_size())  # DDP averages gradients over ranks

                def part_scores(dense_weight, sparse_weight):  # (B, N)
                    return combined_scores(q_dense, q_bow, d_dense, d_bow, dense_weight, sparse_weight)

                def part_loss(scores):
                    return contrastive_loss(scores, g, offset, self.temperature)
                name = "contrastive_loss"
                terms["candidates"] = torch.tensor(float(d_dense.shape[0]))  # documents each query is scored against
            loss = part_loss(part_scores(self.dense_weight, self.sparse_weight))
            terms[name] = loss.detach()
            if self.part_loss_weight:  # each part also trained alone (its own softmax over the same documents)
                dense_loss = part_loss(part_scores(self.dense_weight, 0.0))
                sparse_loss = part_loss(part_scores(0.0, self.sparse_weight))
                terms["dense_" + name], terms["sparse_" + name] = dense_loss.detach(), sparse_loss.detach()
                loss = loss + self.part_loss_weight * (dense_loss + sparse_loss)
            loss = loss * scale  # DDP averages gradients over ranks; the gathered documents make up for it
            if self.flops_query:
                reg = flops_regularizer(q_bow)
                terms["flops_query"] = reg.detach()
                loss = loss + self.flops_query * reg
            if self.flops_doc:
                reg = flops_regularizer(d_bow)
                terms["flops_doc"] = reg.detach()
                loss = loss + self.flops_doc * reg
            return {"loss": loss, **terms}

    return BiEncoderForTraining


def calibrate_sparse(retriever, tokenizer, texts: list[str], fraction: float, max_length: int,
                     batch_size: int = 32) -> None:
    """Shift the MLM-head bias so each vocabulary entry's max-pooled logit ``mu`` is positive in only
    ``fraction`` of the sample documents: ``b_v -= quantile_{1-fraction}(mu[:, v])``.

    Why: an MLM head initialised as the identity (or trained only with DupMAE's softmax bag-of-words
    loss, which is shift-invariant) gives positive logits for almost the whole vocabulary, so after
    ReLU the sparse inner products are ~1e5 and dwarf the dense part. The shift keeps each document's
    ranking of tokens (an idf-like per-token threshold) and makes the vector sparse.
    """
    import torch

    from ..modeling.bow import max_pool_head

    mus = []
    retriever.eval()
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            enc = tokenizer(texts[s:s + batch_size], max_length=max_length, truncation=True, padding=True,
                            return_tensors="pt")
            hidden = retriever.mlm.bert(**enc).last_hidden_state  # (b, L, D)
            mus.append(max_pool_head(hidden, enc["attention_mask"], retriever.mlm.cls, retriever.chunk_size))  # (b, V)
    mu = torch.cat(mus)  # (n, V)
    threshold = torch.quantile(mu, 1.0 - fraction, dim=0)  # (V,)
    with torch.no_grad():
        retriever.mlm.cls.predictions.bias -= threshold
    retriever.train()


def calibrate_sparse_scale(retriever, tokenizer, queries: list[str], positives: list[str], query_max_length: int,
                           doc_max_length: int, temperature: float = 1.0) -> float:
    """Scale the sparse scores by the factor ``s`` (folded into the MLM head, :func:`fold_sparse_weight`)
    that minimises the in-batch contrastive loss of the sparse part alone, ``CE(s * S / temperature)``
    with ``S = mu_q . mu_d`` over ``queries`` x their ``positives`` (row i's positive is column i).
    ``s`` comes from a log grid over [1e-4, 1e4] (steps of 10^0.05); the ranking each query makes is unchanged. Returns ``s``."""
    import torch

    if retriever.config.activation != "relu":
        raise ValueError(f"sparse_scale_calibration needs activation 'relu' (scores scale with the logits); "
                         f"the model has {retriever.config.activation!r}")
    retriever.eval()
    with torch.inference_mode():
        q = tokenizer(queries, max_length=query_max_length, truncation=True, padding=True, return_tensors="pt")
        d = tokenizer(positives, max_length=doc_max_length, truncation=True, padding=True, return_tensors="pt")
        q_bow = retriever(q["input_ids"], q["attention_mask"])[1]  # (n, V)
        d_bow = retriever(d["input_ids"], d["attention_mask"])[1]  # (n, V)
        scores = (q_bow @ d_bow.T).float() / temperature  # (n, n)
        grid = torch.logspace(-4, 4, 161, dtype=torch.float64)
        target = torch.arange(len(queries))
        losses = [torch.nn.functional.cross_entropy(float(g) * scores, target).item() for g in grid]
        before = torch.nn.functional.cross_entropy(scores, target).item()
    best = float(grid[min(range(len(losses)), key=losses.__getitem__)])
    log.info("sparse scale calibration: x%.4g (in-batch sparse loss %.3f -> %.3f on %d pairs)", best, before,
             min(losses), len(queries))
    fold_sparse_weight(retriever, best)
    retriever.train()
    return best


def fold_sparse_weight(retriever, weight: float) -> None:
    """Scale the MLM-head logits by ``sqrt(weight)`` (LayerNorm affine and bias), so that with ReLU
    ``mu_q . mu_d`` of the saved model equals ``weight *`` the trained one."""
    import torch

    c = math.sqrt(weight)
    head = retriever.mlm.cls.predictions
    with torch.no_grad():
        head.transform.LayerNorm.weight.mul_(c)
        head.transform.LayerNorm.bias.mul_(c)
        head.bias.mul_(c)


# ------------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------------
def _make_trainer_class():
    import torch

    class FinetuneTrainer(trainer_base()):
        """Logs each loss term."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._term_sums: dict = {}
            self._term_count = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            for k, v in out.items():
                if k != "loss":
                    self._term_sums[k] = self._term_sums.get(k, 0.0) + float(v)
            self._term_count += 1
            return (out["loss"], out) if return_outputs else out["loss"]

        def log(self, logs, *args, **kwargs):
            if "loss" in logs and self._term_count:
                names = sorted(self._term_sums)
                mean = torch.tensor([self._term_sums[k] / self._term_count for k in names])
                mean = self.accelerator.reduce(mean, reduction="mean") if self.args.world_size > 1 else mean
                logs = {**logs, **{k: round(float(v), 4) for k, v in zip(names, mean)}}
                self._term_sums, self._term_count = {}, 0
            return super().log(logs, *args, **kwargs)

    return FinetuneTrainer


def _epoch_callback(dataset):
    from transformers import TrainerCallback

    class SetDatasetEpoch(TrainerCallback):
        """Fresh negatives each epoch: groups are drawn from (seed, epoch, index)."""

        def on_epoch_begin(self, args, state, control, **kwargs):
            dataset.epoch = int(math.floor(state.epoch + 1e-6)) if state.epoch else 0

    return SetDatasetEpoch()


def run_finetuning(args: FinetuneArguments, callbacks: list | None = None) -> Path:
    """Fine-tune a DupMAE retriever (one stage) and return the folder of the saved checkpoint."""
    from transformers import set_seed

    from ..modeling.retriever import DupMAERetriever

    args = replace(args, precision=resolve_precision(args))  # provenance records the concrete one
    out = Path(args.output_dir)
    resume_from = resume_point(args, PROVENANCE_NAME, "fine-tuned")
    training_args = training_arguments(
        args,
        dataloader_drop_last=True,  # equal batches on every process: the gathered groups line up
        ddp_find_unused_parameters=not (args.sparse_weight or args.flops_query or args.flops_doc))
    world = training_args.world_size
    progress = not args.disable_tqdm and training_args.process_index == 0
    t0 = time.time()
    with training_args.main_process_first(desc="training data"):
        out.mkdir(parents=True, exist_ok=True)
        examples, docs, negatives = build_examples(args, out, progress=progress, device=str(training_args.device))
    if training_args.should_save:
        write_negatives(out / NEGATIVES_NAME, negatives)
    data_seconds = time.time() - t0

    set_seed(args.seed)
    retriever, tokenizer = DupMAERetriever.from_pretrained(args.model_name_or_path)
    overrides = {"query_max_length": args.query_max_length, "doc_max_length": args.doc_max_length}
    if args.activation:
        overrides["activation"] = args.activation
    if args.dense_dim and args.dense_dim != retriever.dense_dim:
        retriever = DupMAERetriever(retriever.mlm, replace(retriever.config, dense_dim=args.dense_dim))
        retriever.set_special_ids(list(tokenizer.all_special_ids))
    retriever.config = replace(retriever.config, **overrides)
    if args.dropout is not None:
        set_dropout(retriever, args.dropout)
    if args.sparse_calibration and not resume_from:
        sample = sorted(docs)[:256]
        calibrate_sparse(retriever, tokenizer, [docs[d] for d in sample], args.sparse_calibration,
                         args.doc_max_length)
    sparse_scale = None
    if args.sparse_scale_calibration and not resume_from:
        pairs = sorted(examples, key=lambda ex: ex.qid)[:64]
        sparse_scale = calibrate_sparse_scale(retriever, tokenizer, [ex.query for ex in pairs],
                                              [docs[ex.positives[0]] for ex in pairs], args.query_max_length,
                                              args.doc_max_length, args.temperature)
    if len(examples) < args.batch_size * world:
        raise ValueError(f"{len(examples)} training queries < one global batch ({args.batch_size} x {world}); "
                         "lower --batch-size.")
    dataset = GroupDataset(examples, docs, args.group_size, args.seed)
    collator = GroupCollator(tokenizer, args.query_max_length, args.doc_max_length)
    model = _make_bi_encoder_class()(retriever, args)
    trainer = _make_trainer_class()(model=model, args=training_args, train_dataset=dataset, data_collator=collator,
                                    callbacks=[_epoch_callback(dataset), *(callbacks or [])],
                                    head_learning_rate=args.head_learning_rate)
    start = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - start
    if training_args.should_save:
        _save_final(trainer, tokenizer, out, args, examples, seconds, data_seconds, resume_from, result, sparse_scale)
    trainer.accelerator.wait_for_everyone()
    return out


def _save_final(trainer, tokenizer, out, args, examples, seconds, data_seconds, resume_from, result, sparse_scale):
    """Write the retriever checkpoint (config with ``finetuning``) and the provenance, files renamed in.
    ``sparse_scale``: the factor of ``--sparse-scale-calibration`` (None when off, or when this run
    resumed one that applied it)."""
    from .. import __version__
    from ..modeling.backbone import resolve_model_path
    from ..provenance import provenance, write_json

    retriever = trainer.accelerator.unwrap_model(trainer.model).retriever
    folded = None
    if args.fold_sparse_weight and retriever.config.activation == "relu" and args.dense_weight and args.sparse_weight \
            and args.sparse_weight != args.dense_weight:
        # the saved model is scored with the unweighted sum; keep its ranking = the trained score's
        import copy

        retriever = copy.deepcopy(retriever)
        folded = args.sparse_weight / args.dense_weight
        fold_sparse_weight(retriever, folded)
    finetuning = {
        "stage": args.stage, "start": args.model_name_or_path, "train": args.train, "split": args.split,
        "negatives": args.mine_source(), "mine_depth": args.mine_depth, "group_size": args.group_size,
        "temperature": args.temperature, "dense_weight": args.dense_weight, "sparse_weight": args.sparse_weight,
        "part_loss_weight": args.part_loss_weight,
        "sparse_weight_folded": folded, "sparse_calibration": args.sparse_calibration,
        "sparse_scale_calibration": sparse_scale,
        "flops_query": args.flops_query, "flops_doc": args.flops_doc,
        "query_max_length": args.query_max_length, "doc_max_length": args.doc_max_length,
        "queries": len(examples), "steps": trainer.state.global_step, "batch_size": args.batch_size,
        "world_size": trainer.args.world_size, "share_negatives": args.share_negatives,
        "learning_rate": args.learning_rate, "head_learning_rate": args.head_learning_rate, "epochs": args.num_train_epochs, "seed": args.seed,
        "precision": args.precision, "dropout": args.dropout, "dupmae_ir_version": __version__,
        "previous": retriever.config.finetuning,
    }
    retriever.config = replace(retriever.config, finetuning=finetuning)
    save_final_model(retriever, tokenizer, out, PROVENANCE_NAME)
    history = [h for h in trainer.state.log_history if "loss" in h or "train_runtime" in h]
    write_json(out / PROVENANCE_NAME, provenance(
        kind="dupmae_ir.finetune", arguments=asdict(args), finetuning=finetuning,
        start_path=resolve_model_path(args.model_name_or_path), resumed_from=str(resume_from) if resume_from else None,
        seconds_training=round(seconds, 2), seconds_data=round(data_seconds, 2),
        train_metrics=getattr(result, "metrics", None), log_history=history))


def argument_groups() -> dict[str, list[str]]:
    """Field names of :class:`FinetuneArguments` per ``--help`` section (the CLI builds on this)."""
    order = [f.name for f in fields(FinetuneArguments)]
    cuts = {"model": "model_name_or_path", "data": "train", "loss": "group_size", "optimisation": "output_dir",
            "run control": "logging_steps"}
    groups, current = {}, None
    starts = {v: k for k, v in cuts.items()}
    for name in order:
        current = starts.get(name, current)
        groups.setdefault(current, []).append(name)
    return groups
