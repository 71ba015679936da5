"""Arguments of pre-training and fine-tuning: dataclasses that ``transformers.HfArgumentParser`` reads
(``python -m dupmae_ir.pretrain|finetune``; a JSON file works too) and that the library takes directly.

:class:`TrainArguments` holds what both share (model, optimisation, run control), mapped onto
``transformers.TrainingArguments`` by :func:`dupmae_ir.train.trainer.training_arguments`;
:class:`PretrainArguments` and :class:`FinetuneArguments` add their own and change defaults. Each field's
``metadata`` gives its ``help``, its ``--help`` section (``group``) and, optionally, ``choices``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import ClassVar

from .. import numbers as cli
from ..precision import TRAINING_DTYPES as PRECISIONS

STAGES = (1, 2, 3)
MINE_SOURCES = ("auto", "bm25", "model", "none")
GROUPS = ("model", "data", "method", "loss", "optimisation", "run control")


# Every number field's range: the flag's argparse type (one-line error) and __post_init__'s check (library use).
NUMBER_RULES = {
    "max_steps": cli.number(int), "num_train_epochs": cli.positive_float, "batch_size": cli.positive_int,
    "gradient_accumulation_steps": cli.positive_int, "learning_rate": cli.nonnegative_float,
    "head_learning_rate": cli.nonnegative_float, "warmup_ratio": cli.unit_float, "weight_decay": cli.nonnegative_float,
    "max_grad_norm": cli.positive_float, "seed": cli.nonnegative_int, "logging_steps": cli.positive_int,
    "save_steps": cli.positive_int, "save_total_limit": cli.positive_int,
    # pre-training
    "max_seq_length": cli.max_length, "max_docs": cli.positive_int, "encoder_mlm_probability": cli.fraction,
    "decoder_mlm_probability": cli.fraction, "bow_loss_weight": cli.nonnegative_float,
    "dataloader_num_workers": cli.nonnegative_int,
    # fine-tuning
    "dense_dim": cli.positive_int, "sparse_calibration": cli.fraction, "max_queries": cli.positive_int,
    "holdout_fraction": cli.number(float, 0.0, 0.9, what="a fraction in [0, 0.9]"),
    "holdout_seed": cli.nonnegative_int, "mine_depth": cli.positive_int, "mine_skip": cli.nonnegative_int,
    "encode_batch_size": cli.positive_int, "query_max_length": cli.max_length, "doc_max_length": cli.max_length,
    "group_size": cli.positive_int, "temperature": cli.positive_float, "teacher_temperature": cli.positive_float,
    "dense_weight": cli.nonnegative_float, "sparse_weight": cli.nonnegative_float,
    "part_loss_weight": cli.nonnegative_float, "flops_query": cli.nonnegative_float,
    "flops_doc": cli.nonnegative_float, "dropout": cli.number(float, 0.0, 0.99, what="a rate in [0, 0.99]"),
}


def check_numbers(args) -> None:
    """Every set number field of ``args`` within its :data:`NUMBER_RULES` range, else ``ValueError``
    naming the field, its value and the range."""
    for name, rule in NUMBER_RULES.items():
        value = getattr(args, name, None)
        if value is None or isinstance(value, bool):
            continue
        try:
            rule(repr(value))
        except argparse.ArgumentTypeError:
            raise ValueError(f"{name}={value!r}: must be {rule.__name__}") from None


def arg(default, help: str, group: str, **metadata):
    """A dataclass field with its ``--help`` text and section."""
    assert group in GROUPS, group
    return field(default=default, metadata={"help": help, "group": group, **metadata})


@dataclass
class TrainArguments:
    """What pre-training and fine-tuning share. Defaults run on a CPU."""

    number_rules: ClassVar[dict] = NUMBER_RULES  # read by the command-line parser (dupmae_ir.cli)

    model_name_or_path: str = arg("default", "Start checkpoint: 'default' (offline MiniLM-L6), a local Hugging Face / "
                                             "DupMAE checkpoint folder, or a cached hub id.", "model")
    data_dir: str | None = arg(None, "Folder of local BEIR collections tried first (e.g. ../shared/data/beir).", "data")
    output_dir: str = arg("encoders/dupmae", "Folder of the final checkpoint (checkpoints/ inside).", "optimisation")
    max_steps: int = arg(-1, "Optimizer steps; <= 0 means use num_train_epochs.", "optimisation")
    num_train_epochs: float = arg(1.0, "Epochs when max_steps <= 0.", "optimisation")
    batch_size: int = arg(16, "Examples (queries) per device per micro-batch.", "optimisation")
    gradient_accumulation_steps: int = arg(1, "Micro-batches per optimizer step.", "optimisation")
    learning_rate: float = arg(2e-5, "Peak learning rate.", "optimisation")
    head_learning_rate: float | None = arg(
        None, "Peak learning rate of the parameters outside the backbone body (MLM-head transform and bias, "
              "decoder layer, dense projection), e.g. for a freshly initialised head. Default: --learning-rate "
              "for all (paper).", "optimisation")
    warmup_ratio: float = arg(0.1, "Linear warm-up fraction.", "optimisation")
    weight_decay: float = arg(0.01, "AdamW weight decay.", "optimisation")
    max_grad_norm: float = arg(1.0, "Gradient clipping.", "optimisation")
    precision: str = arg("fp32", "fp32 | bf16 (CPU with native bf16, Ampere+ GPU) | fp16 (GPU) | auto (bf16 on GPUs "
                                 "and on CPUs with AVX512-BF16/AMX, else fp32; decided from the hardware).",
                         "optimisation", choices=PRECISIONS)
    seed: int = arg(42, "Seed of init, data order, masks and negative sampling.", "optimisation")
    logging_steps: int = arg(10, "Log the losses every N steps.", "run control")
    save_steps: int = arg(500, "Checkpoint every N steps.", "run control")
    save_total_limit: int | None = arg(2, "Keep at most N checkpoints.", "run control")
    resume: bool = arg(False, "Continue from the last checkpoint in output_dir/checkpoints.", "run control")
    overwrite_output_dir: bool = arg(False, "Replace a finished model that this command wrote in output_dir.",
                                     "run control")
    ddp_backend: str | None = arg(None, "torch.distributed backend under torchrun (default: nccl on GPU, gloo on "
                                        "CPU).", "run control")
    use_cpu: bool = arg(False, "Train on CPU even when a GPU is present.", "run control")
    disable_tqdm: bool = arg(False, "No progress bars.", "run control")

    def __post_init__(self):
        check_numbers(self)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; valid: {PRECISIONS}")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size and gradient_accumulation_steps must be >= 1")


@dataclass
class PretrainArguments(TrainArguments):
    """DupMAE pre-training (paper section 3). Defaults run on a CPU in minutes (bundled SciFact, MiniLM)."""

    mlm_head_init: str = arg("identity", "Init of a missing MLM head: identity | random (see "
                                         "dupmae_ir.modeling.backbone).", "model", choices=("identity", "random"))
    corpus: str = arg("default", "Collection: 'default' (bundled SciFact), a BEIR folder, a JSONL collection, "
                                 "msmarco-passage, beir/<name>; several joined by '+' are pre-trained on together "
                                 "(default+beir/nfcorpus).", "data")
    max_seq_length: int = arg(128, "Pieces per example, [CLS] and [SEP] included (paper: 512 Wikipedia/BookCorpus, "
                                   "150 MS MARCO).", "data")
    layout: str = arg("truncate", "truncate: one example per document; pack: documents concatenated into "
                                  "full-length chunks.", "data", choices=("truncate", "pack"))
    max_docs: int | None = arg(None, "Use only the first N documents (smoke runs).", "data")
    cache_dir: str | None = arg(None, "Where tokenised corpora are cached (default ~/.cache/dupmae_ir/pretrain or "
                                      "$DUPMAE_CACHE).", "data")
    method: str = arg("code", "Loss preset: code (authors' code: L_dec + 0.1 L_bow + L_mlm, 1/m target, masked "
                              "positions pooled) | paper (1:1:1, unnormalised target, masked positions excluded).",
                      "method", choices=("code", "paper"))
    bow_loss_weight: float | None = arg(None, "Override the preset's L_bow weight.", "method")
    bow_normalize: bool | None = arg(None, "Override: 1/m bag-of-words target (True) or unnormalised sum over set(X) "
                                           "(False).", "method")
    bow_pool_masked: bool | None = arg(None, "Override: encoder-masked positions enter the max-pool (True) or not "
                                             "(False).", "method")
    encoder_mlm_probability: float = arg(0.30, "Encoder whole-word masking rate.", "method")
    decoder_mlm_probability: float = arg(0.50, "Decoder (per-row visibility) masking rate.", "method")
    dataloader_num_workers: int = arg(0, "DataLoader worker processes.", "run control")
    # defaults of the shared fields for pre-training (paper: lr 1e-4, warm-up 0.1, wd 0.01)
    output_dir: str = arg("encoders/dupmae-pretrained", "Folder of the final checkpoint (checkpoints/ inside).",
                          "optimisation")
    max_steps: int = arg(200, "Optimizer steps; <= 0 means use num_train_epochs.", "optimisation")
    learning_rate: float = arg(1e-4, "Peak learning rate (paper 1e-4).", "optimisation")
    save_steps: int = arg(100, "Checkpoint every N steps.", "run control")

    def __post_init__(self):
        super().__post_init__()
        from ..data.pretrain_corpus import LAYOUTS
        from ..modeling.dupmae import PRESETS

        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r}; valid: {LAYOUTS}")
        if self.method not in PRESETS:
            raise ValueError(f"method={self.method!r}; valid: {PRESETS}")

    def options(self):
        """The :class:`~dupmae_ir.modeling.dupmae.DupMAEOptions` these arguments select."""
        from ..modeling.dupmae import DupMAEOptions

        opts = DupMAEOptions.preset(self.method)
        for name in ("bow_loss_weight", "bow_normalize", "bow_pool_masked"):
            if getattr(self, name) is not None:
                setattr(opts, name, getattr(self, name))
        return opts


@dataclass
class FinetuneArguments(TrainArguments):
    """Bi-encoder fine-tuning, one stage (paper section 4). Defaults run on a CPU (bundled SciFact train)."""

    stage: int = arg(1, "1: in-batch + BM25/file negatives; 2: hard negatives mined by model_name_or_path; 3: "
                        "distillation from --teacher-scores.", "model", choices=STAGES)
    dense_dim: int | None = arg(None, "Add a learned projection D -> d' for the dense part (paper 384 for BERT-base); "
                                      "default: keep the checkpoint's.", "model")
    activation: str | None = arg(None, "Bag-of-words activation: plain_relu | log1p_relu | none (default: the "
                                       "checkpoint's; 'relu', the old name of plain_relu, is still read).", "model")
    sparse_calibration: float | None = arg(
        None, "Before training, shift the MLM-head bias so that each vocabulary entry is active (mu > 0) in only this "
              "fraction of sampled documents (e.g. 0.05): the bag-of-words starts sparse. Default: off.", "model")
    sparse_scale_calibration: bool = arg(
        False, "Before training (after --sparse-calibration), scale the bag-of-words so that the sparse part alone "
               "starts at its lowest in-batch contrastive loss on a sample of training pairs (folded into the MLM "
               "head; plain_relu only). Default: off (the paper's start).", "model")
    train: str = arg("default", "Collection with training queries and qrels: 'default' (bundled SciFact), a BEIR "
                                "folder, msmarco-passage, beir/<name>.", "data")
    split: str = arg("train", "Split of the training queries/qrels.", "data")
    corpus: str | None = arg(None, "Collection holding the documents (default: --train).", "data")
    max_queries: int | None = arg(None, "Use only the first N training queries (smoke runs).", "data")
    holdout_fraction: float = arg(0.0, "Hold this fraction of the training queries out (a seeded dev split, "
                                       "dupmae_ir.data.splits.carve_dev) for choosing settings on them.", "data")
    holdout_seed: int = arg(13, "Seed of the held-out dev split.", "data")
    negatives: str | None = arg(None, "Negatives file: TREC run ('qid Q0 docid rank score tag') or TSV "
                                      "'qid<TAB>docid'; judged positives are removed.", "data")
    mine: str = arg("auto", "Where negatives come from without --negatives: auto (stage 1: bm25, stage 2: model), "
                            "bm25, model (the start checkpoint's own retrieval), none (in-batch only).", "data",
                    choices=MINE_SOURCES)
    mine_depth: int = arg(200, "Negatives are sampled from each query's top-N (paper: 200), positives removed.", "data")
    mine_skip: int = arg(0, "Skip the first N non-positive hits (guards against unjudged positives).", "data")
    mine_index: str | None = arg(None, "Stage 2 on large corpora: mine from this index of `python -m "
                                       "dupmae_ir.encode` (built with the stage-1 model) instead of exhaustive "
                                       "in-memory scoring (under torchrun: default OUTPUT/mine-index, encoded "
                                       "by all processes).", "data")
    mine_mode: str = arg("hybrid", "Score used for model mining.", "data", choices=("hybrid", "dense", "impact"))
    bm25_index: str | None = arg(None, "BM25 index folder for mining (built there if absent; default: "
                                       "OUTPUT/bm25-index).", "data")
    teacher_scores: str | None = arg(None, "Stage 3: teacher scores, lines 'qid docid score' or a TREC run; the group "
                                           "is {d+} U negatives of the file.", "data")
    encode_batch_size: int = arg(32, "Batch size of corpus encoding when mining with the model.", "data")
    query_max_length: int = arg(32, "Query pieces, specials included (paper 32).", "data")
    doc_max_length: int = arg(144, "Passage pieces, specials included (paper 140-150).", "data")
    group_size: int = arg(8, "Documents per query: 1 positive + (group_size - 1) negatives (paper 16).", "loss")
    temperature: float = arg(1.0, "Softmax temperature of the student scores (paper 1).", "loss")
    teacher_temperature: float = arg(1.0, "Stage 3: temperature of the teacher scores.", "loss")
    distill_loss: str = arg("kl", "Stage 3: kl | ce (soft-label cross-entropy).", "loss", choices=("kl", "ce"))
    dense_weight: float = arg(1.0, "Weight of the dense inner product in the training score (0 isolates the sparse "
                                   "part).", "loss")
    sparse_weight: float = arg(1.0, "Weight of the sparse inner product (0 isolates the dense part).", "loss")
    part_loss_weight: float = arg(0.0, "Also train each part on its own: add this weight times the same loss on the "
                                       "dense scores alone plus on the sparse scores alone (as BGE-M3 does for its "
                                       "hybrid). 0: the paper's loss on the combined score only.", "loss")
    fold_sparse_weight: bool = arg(True, "With plain_relu, fold sqrt(sparse_weight / dense_weight) into the MLM head "
                                         "at save time so the saved model's unweighted sum (what search uses) equals "
                                         "the trained score.", "loss")
    flops_query: float = arg(0.0, "FLOPS regularisation weight on query bag-of-words vectors.", "loss")
    flops_doc: float = arg(0.0, "FLOPS regularisation weight on document bag-of-words vectors.", "loss")
    bow_loss_weight: float = arg(0.0, "Keep DupMAE's bag-of-words loss while fine-tuning: add this weight times "
                                      "L_bow (softmax of the max-pooled logits against the text's own normalised "
                                      "word pieces, all visible: not pre-training's masked 1/m target) of every "
                                      "query and passage, to ground the expansion in the text. 0: the paper's "
                                      "fine-tuning.", "loss")
    share_negatives: bool = arg(True, "Under torchrun, score every query against the documents of all processes.",
                                "loss")
    dropout: float | None = arg(None, "Set every backbone dropout (hidden and attention) to this rate while training "
                                      "(0: off, faster on CPUs). Default: the checkpoint's (0.1 for BERT). Not saved.",
                                "optimisation")
    # defaults of the shared fields for fine-tuning (paper: lr 2e-5, 16 queries per device)
    output_dir: str = arg("encoders/dupmae-finetuned", "Folder of the final checkpoint (checkpoints/ inside).",
                          "optimisation")
    learning_rate: float = arg(2e-5, "Peak learning rate (paper 2e-5).", "optimisation")
    save_steps: int = arg(500, "Checkpoint every N steps.", "run control")

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r}; valid: {STAGES}")
        if self.mine not in MINE_SOURCES:
            raise ValueError(f"mine={self.mine!r}; valid: {MINE_SOURCES}")
        from ..modeling.losses import DISTILL_LOSSES

        if self.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"distill_loss={self.distill_loss!r}; valid: {DISTILL_LOSSES}")
        if self.group_size < 1:
            raise ValueError("group_size must be >= 1")
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
