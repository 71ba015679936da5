"""DupMAE pre-training on the Hugging Face Trainer: CPU, ``torchrun`` (NCCL on GPUs, gloo on CPUs),
gradient accumulation, bf16/fp16, each loss term logged, checkpoints every N steps, exact resume.

Front door: :func:`run_pretraining` (``PretrainArguments`` -> path of the saved checkpoint); the CLI
``python -m dupmae_ir.pretrain`` is a thin layer over it.

Output folder (``output_dir``):

- a standard Hugging Face masked-LM checkpoint (``model.safetensors``, ``config.json``, tokenizer):
  ``AutoModelForMaskedLM`` and :meth:`dupmae_ir.modeling.retriever.DupMAERetriever.from_pretrained`
  load it; the decoder layer is not saved (it is discarded after pre-training, paper section 3);
- ``dupmae_config.json``: :class:`~dupmae_ir.modeling.retriever.RetrieverConfig` with
  ``pretraining = {method options, data, steps, version}``;
- ``dupmae_pretrain.json``: provenance (arguments, data cache, loss curve, time per step), written last;
- ``checkpoints/checkpoint-<step>``: Trainer checkpoints (model incl. decoder, optimizer, scheduler,
  RNG, trainer state) used by ``resume``.

Exact resume: the collator's masks are a pure function of (seed, epoch, example index) and the data
order is the Trainer's seeded per-epoch order, so an interrupted run resumed from its last
checkpoint takes the same remaining steps on the same batches as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .common import PRECISIONS, resolve_precision, resume_point, save_final_model, trainer_base, training_arguments

log = logging.getLogger(__name__)

PROVENANCE_NAME = "dupmae_pretrain.json"


@dataclass
class PretrainArguments:
    """Everything a pre-training run needs. Defaults run on a CPU in minutes (bundled SciFact, MiniLM)."""

    # model
    model_name_or_path: str = field(default="default", metadata={"help": "Backbone: 'default' (offline MiniLM-L6), a local HF checkpoint folder, or a cached hub id (e.g. bert-base-uncased)."})
    mlm_head_init: str = field(default="identity", metadata={"choices": ("identity", "random"), "help": "Init of a missing MLM head: identity | random (see dupmae_ir.modeling.backbone)."})
    # data
    corpus: str = field(default="default", metadata={"help": "Collection of the data layer: 'default' (bundled SciFact), a BEIR folder, a JSONL collection, msmarco-passage, beir/<name>."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of local BEIR collections tried first (e.g. ../shared/data/beir)."})
    max_seq_length: int = field(default=128, metadata={"help": "Pieces per example, [CLS] and [SEP] included (paper: 512 Wikipedia/BookCorpus, 150 MS MARCO)."})
    layout: str = field(default="truncate", metadata={"choices": ("truncate", "pack"), "help": "truncate: one example per document; pack: documents concatenated into full-length chunks."})
    max_docs: int | None = field(default=None, metadata={"help": "Use only the first N documents (smoke runs)."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where tokenised corpora are cached (default ~/.cache/dupmae_ir/pretrain or $DUPMAE_CACHE)."})
    # method
    method: str = field(default="code", metadata={"choices": ("code", "paper"), "help": "Loss preset: code (authors' code: L_dec + 0.1 L_bow + L_mlm, 1/m target, masked positions pooled) | paper (1:1:1, unnormalised target, masked positions excluded)."})
    bow_loss_weight: float | None = field(default=None, metadata={"help": "Override the preset's L_bow weight."})
    bow_normalize: bool | None = field(default=None, metadata={"help": "Override: 1/m bag-of-words target (True) or unnormalised sum over set(X) (False)."})
    bow_pool_masked: bool | None = field(default=None, metadata={"help": "Override: encoder-masked positions enter the max-pool (True) or not (False)."})
    encoder_mlm_probability: float = field(default=0.30, metadata={"help": "Encoder whole-word masking rate."})
    decoder_mlm_probability: float = field(default=0.50, metadata={"help": "Decoder (per-row visibility) masking rate."})
    # optimisation
    output_dir: str = field(default="encoders/dupmae-pretrained", metadata={"help": "Folder of the final checkpoint (checkpoints/ inside)."})
    max_steps: int = field(default=200, metadata={"help": "Optimizer steps; <= 0 means use num_train_epochs."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs when max_steps <= 0."})
    batch_size: int = field(default=16, metadata={"help": "Examples per device per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (paper 1e-4)."})
    head_learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate of the parameters outside the backbone body (MLM-head transform and bias, decoder layer); for a freshly initialised head. Default: --learning-rate for all (paper)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Linear warm-up fraction (paper 0.1)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (paper 0.01)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping."})
    precision: str = field(default="fp32", metadata={"choices": PRECISIONS, "help": "fp32 | bf16 (CPU or Ampere+ GPU) | fp16 (GPU) | auto (bf16 on GPUs and on CPUs with native bf16 instructions, AVX512-BF16/AMX; else fp32)."})
    seed: int = field(default=42, metadata={"help": "Seed of init, data order and masks."})
    # run control
    logging_steps: int = field(default=10, metadata={"help": "Log the losses every N steps."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most N checkpoints."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir/checkpoints."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing finished model in output_dir."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    ddp_backend: str | None = field(default=None, metadata={"help": "torch.distributed backend under torchrun (default: nccl on GPU, gloo on CPU)."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is present."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar."})

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; valid: {PRECISIONS}")
        from ..data.pretrain_corpus import LAYOUTS
        from ..modeling.dupmae import PRESETS

        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r}; valid: {LAYOUTS}")
        if self.method not in PRESETS:
            raise ValueError(f"method={self.method!r}; valid: {PRESETS}")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size and gradient_accumulation_steps must be >= 1")

    def options(self):
        """The :class:`~dupmae_ir.modeling.dupmae.DupMAEOptions` these arguments select."""
        from ..modeling.dupmae import DupMAEOptions

        opts = DupMAEOptions.preset(self.method)
        for name in ("bow_loss_weight", "bow_normalize", "bow_pool_masked"):
            if getattr(self, name) is not None:
                setattr(opts, name, getattr(self, name))
        return opts


def _make_trainer_class():
    """The Trainer subclass (built lazily so importing this module stays cheap)."""
    import torch

    class DupMAETrainer(trainer_base()):
        """Logs the three loss terms; checkpoints hold the whole module, decoder layer included (resume)."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._term_sums = None
            self._term_count = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            terms = torch.stack([out.mlm_loss, out.dec_loss, out.bow_loss]).float()  # (3,)
            self._term_sums = terms if self._term_sums is None else self._term_sums + terms
            self._term_count += 1
            return (out.loss, out) if return_outputs else out.loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs and self._term_count:
                mean = self.accelerator.reduce(self._term_sums / self._term_count, reduction="mean")  # (3,)
                logs = {**logs, "mlm_loss": round(float(mean[0]), 4), "dec_loss": round(float(mean[1]), 4),
                        "bow_loss": round(float(mean[2]), 4)}
                self._term_sums, self._term_count = None, 0
            return super().log(logs, *args, **kwargs)

    return DupMAETrainer


def _epoch_callback(collator):
    from transformers import TrainerCallback

    class SetCollatorEpoch(TrainerCallback):
        """Fresh masks each epoch: the collator's random draws are keyed by (seed, epoch, index)."""

        def on_epoch_begin(self, args, state, control, **kwargs):
            collator.epoch = int(math.floor(state.epoch + 1e-6)) if state.epoch else 0

    return SetCollatorEpoch()


def run_pretraining(args: PretrainArguments, callbacks: list | None = None) -> Path:
    """Pre-train a DupMAE masked LM and return the folder of the saved checkpoint.

    ``callbacks``: extra ``transformers.TrainerCallback`` objects (e.g. early stopping, custom logging).
    """
    from transformers import set_seed

    from ..data.collator import DupMAECollator
    from ..data.pretrain_corpus import build_tokenized_corpus
    from ..modeling.backbone import load_masked_lm, load_tokenizer
    from ..modeling.dupmae import DupMAEForPretraining

    args = replace(args, precision=resolve_precision(args))  # provenance records the concrete one
    out = Path(args.output_dir)
    resume_from = resume_point(args, PROVENANCE_NAME, "pre-trained")
    training_args = training_arguments(
        args,
        dataloader_num_workers=args.dataloader_num_workers,
        ddp_find_unused_parameters=False)  # every parameter (decoder included) is used each step

    tokenizer = load_tokenizer(args.model_name_or_path)
    with training_args.main_process_first(desc="tokenise corpus"):
        dataset = build_tokenized_corpus(args.corpus, tokenizer, args.max_seq_length, args.layout,
                                         cache_dir=args.cache_dir, data_dir=args.data_dir, max_docs=args.max_docs)
    collator = DupMAECollator(tokenizer, max_seq_length=args.max_seq_length,
                              encoder_mlm_probability=args.encoder_mlm_probability,
                              decoder_mlm_probability=args.decoder_mlm_probability, seed=args.seed)
    set_seed(args.seed)  # the decoder's fresh init (and a missing MLM head) are seeded
    options = args.options()
    model = DupMAEForPretraining(load_masked_lm(args.model_name_or_path, mlm_head_init=args.mlm_head_init), options)

    trainer = _make_trainer_class()(model=model, args=training_args, train_dataset=dataset, data_collator=collator,
                                    callbacks=[_epoch_callback(collator), *(callbacks or [])],
                                    head_learning_rate=args.head_learning_rate)
    start = time.time()
    first_step = trainer.state.global_step
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - start
    steps_done = trainer.state.global_step - (int(resume_from.name.split("-")[1]) if resume_from else first_step)

    if training_args.should_save:
        _save_final(trainer, tokenizer, out, args, options, dataset, seconds, steps_done, resume_from, result)
    trainer.accelerator.wait_for_everyone()
    return out


def _save_final(trainer, tokenizer, out, args, options, dataset, seconds, steps_done, resume_from, result):
    """Write the HF masked-LM checkpoint + RetrieverConfig(pretraining=...) + provenance, files renamed in."""
    from .. import __version__
    from ..modeling.backbone import resolve_model_path
    from ..modeling.retriever import DupMAERetriever, RetrieverConfig
    from ..provenance import provenance, write_json

    model = trainer.accelerator.unwrap_model(trainer.model)
    pretraining = {
        "method": "dupmae", "preset": args.method, "options": options.to_dict(),
        "encoder_mlm_probability": args.encoder_mlm_probability,
        "decoder_mlm_probability": args.decoder_mlm_probability,
        "backbone": args.model_name_or_path, "corpus": args.corpus, "layout": args.layout,
        "max_seq_length": args.max_seq_length, "examples": len(dataset), "tokens": dataset.num_tokens,
        "steps": trainer.state.global_step, "batch_size": args.batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "world_size": trainer.args.world_size, "learning_rate": args.learning_rate, "head_learning_rate": args.head_learning_rate, "seed": args.seed,
        "precision": args.precision, "dupmae_ir_version": __version__,
    }
    retriever = DupMAERetriever(model.mlm, RetrieverConfig(pretraining=pretraining))
    save_final_model(retriever, tokenizer, out, PROVENANCE_NAME)  # decoder not saved: only the masked LM
    history = [h for h in trainer.state.log_history if "loss" in h or "train_runtime" in h]
    write_json(out / PROVENANCE_NAME, provenance(
        kind="dupmae_ir.pretrain", arguments=asdict(args), pretraining=pretraining,
        backbone_path=resolve_model_path(args.model_name_or_path), data_cache=str(dataset.folder),
        resumed_from=str(resume_from) if resume_from else None, steps_this_run=steps_done,
        seconds_this_run=round(seconds, 2),
        seconds_per_step=round(seconds / steps_done, 4) if steps_done else None,
        train_metrics=getattr(result, "metrics", None), log_history=history))


def argument_groups() -> dict[str, list[str]]:
    """Field names of :class:`PretrainArguments` per ``--help`` section (the CLI builds on this)."""
    order = [f.name for f in fields(PretrainArguments)]
    groups = {
        "model": ["model_name_or_path", "mlm_head_init"],
        "data": ["corpus", "data_dir", "max_seq_length", "layout", "max_docs", "cache_dir"],
        "method (DupMAE losses and masking)": ["method", "bow_loss_weight", "bow_normalize", "bow_pool_masked",
                                              "encoder_mlm_probability", "decoder_mlm_probability"],
        "optimisation": ["output_dir", "max_steps", "num_train_epochs", "batch_size", "gradient_accumulation_steps",
                         "learning_rate", "head_learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm", "precision", "seed"],
        "run control": ["logging_steps", "save_steps", "save_total_limit", "resume", "overwrite_output_dir",
                        "dataloader_num_workers", "ddp_backend", "use_cpu", "disable_tqdm"],
    }
    assert sorted(sum(groups.values(), [])) == sorted(order), "every argument belongs to one --help group"
    return groups
