"""DupMAE pre-training on the Hugging Face Trainer: CPU, ``torchrun`` (NCCL on GPUs, gloo on CPUs),
gradient accumulation, bf16/fp16, each loss term logged, checkpoints every N steps, exact resume.

Front door: :func:`run_pretraining` (``PretrainArguments`` -> path of the saved checkpoint); the CLI
``python -m dupmae_ir.pretrain`` is a thin layer over it.

Output folder (``output_dir``):

- a standard Hugging Face masked-LM checkpoint (``model.safetensors``, ``config.json``, tokenizer):
  ``AutoModelForMaskedLM`` and :meth:`dupmae_ir.modeling.model.DupMAEModel.from_pretrained`
  load it; the decoder layer is not saved (it is discarded after pre-training, paper section 3);
- ``dupmae_config.json``: :class:`~dupmae_ir.modeling.model.RepresentationConfig` with
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
from dataclasses import asdict, replace
from pathlib import Path

from ..precision import training_precision
from .arguments import PretrainArguments
from .trainer import resume_point, save_final_model, trainer_base, training_arguments

log = logging.getLogger(__name__)

PROVENANCE_NAME = "dupmae_pretrain.json"


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
    from ..data.pretrain_corpus import build_pretraining_corpus
    from ..modeling.backbone import load_masked_lm, load_tokenizer
    from ..modeling.dupmae import DupMAEForPretraining

    # provenance records the concrete precision
    args = replace(args, precision=training_precision(args.precision, args.use_cpu))
    out = Path(args.output_dir)
    resume_from = resume_point(args, PROVENANCE_NAME, "pre-trained", kind="dupmae_ir.pretrain")
    training_args = training_arguments(
        args,
        dataloader_num_workers=args.dataloader_num_workers,
        ddp_find_unused_parameters=False)  # every parameter (decoder included) is used each step

    tokenizer = load_tokenizer(args.model_name_or_path)
    with training_args.main_process_first(desc="tokenise corpus"):
        dataset = build_pretraining_corpus(args.corpus, tokenizer, args.max_seq_length, args.layout,
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
    """Write the HF masked-LM checkpoint + RepresentationConfig(pretraining=...) + provenance, files renamed in."""
    from .. import __version__
    from ..modeling.backbone import resolve_model_path
    from ..modeling.model import DupMAEModel, RepresentationConfig
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
        "world_size": trainer.args.world_size, "learning_rate": args.learning_rate,
        "head_learning_rate": args.head_learning_rate, "seed": args.seed,
        "precision": args.precision, "dupmae_ir_version": __version__,
    }
    retriever = DupMAEModel(model.mlm, RepresentationConfig(pretraining=pretraining))
    save_final_model(retriever, tokenizer, out, PROVENANCE_NAME)  # decoder not saved: only the masked LM
    history = [h for h in trainer.state.log_history if "loss" in h or "train_runtime" in h]
    write_json(out / PROVENANCE_NAME, provenance(
        kind="dupmae_ir.pretrain", arguments=asdict(args), pretraining=pretraining,
        backbone_path=resolve_model_path(args.model_name_or_path), data_cache=[str(f) for f in dataset.folders],
        resumed_from=str(resume_from) if resume_from else None, steps_this_run=steps_done,
        seconds_this_run=round(seconds, 2),
        seconds_per_step=round(seconds / steps_done, 4) if steps_done else None,
        train_metrics=getattr(result, "metrics", None), log_history=history))
