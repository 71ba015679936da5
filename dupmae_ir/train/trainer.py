"""The training loop both pre-training and fine-tuning run on: output-folder and resume checks, the
Hugging Face ``TrainingArguments`` built from :class:`~dupmae_ir.train.arguments.TrainArguments`, the
``transformers.Trainer`` subclass (head learning rate, safetensors checkpoints) and the final save."""
from __future__ import annotations

import os
from pathlib import Path

CHECKPOINTS = "checkpoints"


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-<step>`` folder under ``output_dir/checkpoints``, or None."""
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    steps = [(int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(steps)[1] if steps else None


def resume_point(args, provenance_name: str, what: str, kind: str) -> Path | None:
    """Check ``output_dir`` before any work and mark it as this command's (:func:`dupmae_ir.outputs.claim_in_place`):
    refuse a file, a link, a non-empty folder without this command's marker (never written into) or an
    earlier run's folder (without ``--overwrite-output-dir`` or ``--resume``); with ``--resume`` return
    the checkpoint to continue from. ``kind``: the command's provenance kind, which its marker names.
    Under torchrun the first process alone checks and marks."""
    from ..errors import OutputError
    from ..outputs import OWNER_MARKER, OutputKind, absolute, claim_in_place

    out = absolute(args.output_dir)
    found = last_checkpoint(out) if args.resume else None
    if args.resume and found is None:
        raise OutputError(out / CHECKPOINTS, "--resume: no checkpoint to continue from",
                          "run without --resume to start fresh")
    if int(os.environ.get("RANK", "0")) == 0:
        spec = OutputKind(f"{what} model", OWNER_MARKER, (kind,), legacy=(provenance_name,))
        state = "finished" if (out / provenance_name).is_file() else "unfinished"
        claim_in_place(out, spec, args.resume or args.overwrite_output_dir, f"already holds a {state} {what} model",
                       "pass --overwrite-output-dir to replace it, --resume to continue, or choose another "
                       "--output-dir")
    return found


def training_arguments(args, **overrides):
    """``TrainingArguments`` from a pre-training/fine-tuning argument dataclass (CPU, torchrun with
    gloo on CPU or NCCL on GPU, bf16/fp16), plus the caller's ``overrides``."""
    import torch
    from transformers import TrainingArguments

    use_gpu = torch.cuda.is_available() and not args.use_cpu
    if args.precision == "auto":
        raise ValueError("resolve precision='auto' first (precision.training_precision)")
    if args.precision == "fp16" and not use_gpu:
        raise ValueError("precision=fp16 needs a GPU; on CPU use bf16 or fp32.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    kwargs = dict(
        output_dir=str(Path(args.output_dir) / CHECKPOINTS),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_steps=args.max_steps if args.max_steps > 0 else -1,
        num_train_epochs=args.num_train_epochs,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_ratio,  # transformers >= 5: a float < 1 is a ratio of the total steps
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        lr_scheduler_type="linear",
        bf16=args.precision == "bf16",
        fp16=args.precision == "fp16",
        seed=args.seed,
        logging_steps=args.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        report_to=[],
        remove_unused_columns=False,
        ddp_backend=args.ddp_backend or (None if use_gpu or world == 1 else "gloo"),
        use_cpu=not use_gpu,
        disable_tqdm=args.disable_tqdm,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def set_dropout(model, rate: float) -> int:
    """Set the rate of every ``nn.Dropout`` in ``model`` (BERT's hidden and attention dropout read it
    at each call) to ``rate``; returns how many were set. The saved config keeps its own rates."""
    import torch

    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout={rate}: must be in [0, 1).")
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for m in layers:
        m.p = rate
    return len(layers)


def split_head_learning_rate(optimizer, encoder, head_lr: float | None) -> None:
    """Give every trained parameter outside ``encoder`` (the backbone body: the MLM-head transform and
    bias, the DupMAE decoder layer, a dense projection) its own peak learning rate ``head_lr``.

    A backbone without an MLM head (the default MiniLM) starts with a freshly initialised head, whose
    first losses are above log(V); at the encoder's small learning rate the head learns little in a
    short run while its noisy gradients reshape the encoder. ``None`` keeps one learning rate for all
    (the paper's setting). Called right after the Trainer builds its optimizer, so the scheduler's
    warm-up and decay apply to both groups alike."""
    if head_lr is None:
        return
    inside = {id(p) for p in encoder.parameters()}
    groups = []
    for group in optimizer.param_groups:
        body = [p for p in group["params"] if id(p) in inside]
        rest = [p for p in group["params"] if id(p) not in inside]
        groups += [{**group, "params": body}] if body else []
        groups += [{**group, "params": rest, "lr": head_lr}] if rest else []
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


def save_final_model(retriever, tokenizer, out: Path, marker: str) -> None:
    """Write the finished model into ``out`` (which also holds ``checkpoints/``): saved in full to a
    temporary folder inside it, then each file renamed in. The provenance ``marker`` of a finished
    model is removed first; the caller writes it last, once everything else is in place."""
    import shutil

    tmp = out / f".final-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    retriever.save_pretrained(tmp, tokenizer=tokenizer)
    (out / marker).unlink(missing_ok=True)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()


def trainer_base():
    """The ``transformers.Trainer`` subclass both training loops build on (made lazily so importing
    this module stays cheap): ``head_learning_rate`` for the parameters outside the backbone body,
    and checkpoints of a wrapper module with tied weights (safetensors, tied tensors stored once)."""
    import safetensors.torch
    from transformers import PreTrainedModel, Trainer

    class ToolkitTrainer(Trainer):
        def __init__(self, *a, head_learning_rate=None, **kw):
            super().__init__(*a, **kw)
            self.head_learning_rate = head_learning_rate

        def create_optimizer(self, model=None):
            fresh = self.optimizer is None
            optimizer = super().create_optimizer(model)
            if fresh:  # the body of the one HF masked LM inside the wrapper
                wrapper = self.accelerator.unwrap_model(self.model)
                mlm = next(m for m in wrapper.modules() if isinstance(m, PreTrainedModel))
                split_head_learning_rate(optimizer, mlm.base_model, self.head_learning_rate)
            return optimizer

        def _save(self, output_dir=None, state_dict=None):
            if not self.args.should_save:
                return
            output_dir = output_dir or self.args.output_dir
            os.makedirs(output_dir, exist_ok=True)
            safetensors.torch.save_model(self.accelerator.unwrap_model(self.model),
                                         os.path.join(output_dir, "model.safetensors"))

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            model = self.accelerator.unwrap_model(model or self.model)
            missing, unexpected = safetensors.torch.load_model(
                model, os.path.join(resume_from_checkpoint, "model.safetensors"), strict=False)
            if unexpected or missing:
                raise RuntimeError(f"{resume_from_checkpoint}: checkpoint does not match the model "
                                   f"(missing {missing[:5]}, unexpected {unexpected[:5]})")

    return ToolkitTrainer
