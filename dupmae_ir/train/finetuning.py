"""DupMAE bi-encoder fine-tuning on the Hugging Face Trainer (paper section 4).

Every stage trains the combined score of :class:`~dupmae_ir.modeling.model.DupMAEModel`::

    s(q, d) = w_dense * h_q . h_d + w_sparse * mu_q . mu_d        (paper: w_dense = w_sparse = 1)

- stage 1: contrastive loss over {d+} U in-batch documents U negatives from a file or mined with
  Pyserini BM25 (:mod:`dupmae_ir.bm25`);
- stage 2: the same loss with hard negatives mined by the stage-1 model itself (top-N of the toolkit's
  own retrieval, positives removed): pass the stage-1 checkpoint as ``model_name_or_path``;
- stage 3: distillation, KL (or soft-label CE) from the teacher's softmax over {d+} U hard negatives
  (teacher scores from a file) to the student's.

The loss lives in :mod:`dupmae_ir.modeling.biencoder`, the data in :mod:`dupmae_ir.data.training`, the
calibrations in :mod:`dupmae_ir.modeling.calibration`, the arguments in
:mod:`dupmae_ir.train.arguments`; this module builds the examples (mining negatives) and runs the
trainer. Front door: :func:`run_finetuning` (``FinetuneArguments`` -> path of the saved checkpoint).
Output folder: a ``DupMAEModel`` checkpoint (HF masked LM, safetensors, tokenizer,
``dupmae_config.json`` with ``finetuning = {...}``; its encoder alone is what stock Pyserini's
``--encoder-class auto --pooling cls`` reads), ``negatives.tsv`` (the negatives used),
``dupmae_finetune.json`` (provenance, written last), ``checkpoints/`` (Trainer checkpoints for ``resume``).
"""
from __future__ import annotations

import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

from ..data.training import TrainExample, load_documents, read_negatives_file, read_teacher_scores
from ..precision import training_precision
from .arguments import FinetuneArguments
from .trainer import resume_point, save_final_model, set_dropout, trainer_base, training_arguments

log = logging.getLogger(__name__)

PROVENANCE_NAME = "dupmae_finetune.json"
NEGATIVES_NAME = "negatives.tsv"
MINE_INDEX_NAME = "mine-index"  # stage 2 under torchrun: the index its processes encode and mine from


def build_examples(args: FinetuneArguments, output_dir: Path, progress: bool = True, device: str | None = None):
    """Training examples and the texts of every document they use: ``(examples, docs)``; model mining
    runs on ``device`` (the training device)."""
    from ..data import DataError, resolve
    from ..data.splits import carve_dev, judged_qids
    from ..encode.distributed import world
    from .mining import (
        mine_from_index,
        mine_under_torchrun,
        mine_with_bm25,
        mine_with_model,
        mining_depth,
        negatives_from_run,
    )

    coll = resolve(args.train, data_dir=args.data_dir)
    corpus = resolve(args.corpus or args.train, data_dir=args.data_dir)
    queries = coll.queries(args.split)
    qrels = coll.qrels(args.split)
    qids = judged_qids(queries, qrels)
    if args.holdout_fraction:
        held_out = set(carve_dev(qids, args.holdout_fraction, args.holdout_seed)[1])
        qids = [q for q in qids if q not in held_out]
    if args.max_queries:
        qids = qids[:args.max_queries]
    if not qids:
        raise DataError(f"{args.train} split {args.split!r}", "no query has a judged positive (rel > 0)",
                        "pass a split with judgements (--split)")
    queries = {q: queries[q] for q in qids}

    source = args.mine_source()
    depth = mining_depth(args.mine_depth, args.mine_skip)  # hits per query to mine from
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
                 mine_with_bm25(corpus, queries, depth, index_dir, progress).items()}
    elif source == "model":
        if world():  # every process encodes (unless --mine-index) and searches a share
            run = mine_under_torchrun(args.model_name_or_path, corpus, queries, depth,
                                      Path(args.mine_index or output_dir / MINE_INDEX_NAME), args.mine_mode,
                                      not args.mine_index, args.doc_max_length, args.query_max_length,
                                      args.encode_batch_size, progress)
        elif args.mine_index:
            run = mine_from_index(args.mine_index, queries, depth, args.mine_mode,
                                  encoder=args.model_name_or_path, query_max_length=args.query_max_length,
                                  device=device or "cpu", progress=progress)
        else:
            all_docs = load_documents(corpus, progress=progress)
            run = mine_with_model(args.model_name_or_path, corpus, queries, depth,
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
                                                     f"{missing[:3]}",
                                "stage 3 needs a teacher score for d+ and its negatives")
        examples.append(TrainExample(q, queries[q], positives, negs, teacher.get(q) if teacher else None))
    if args.stage == 3 and not any(e.negatives for e in examples):
        raise DataError(args.teacher_scores, "no teacher-scored negatives for the training queries",
                        "score each training query's candidates in the file")
    needed = {d for e in examples for d in (*e.positives, *e.negatives)}
    docs = ({d: all_docs[d] for d in needed if d in all_docs} if all_docs is not None
            else load_documents(corpus, needed, progress))
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

    from ..data.training import GroupCollator, GroupDataset, write_negatives
    from ..encode.distributed import WAIT
    from ..modeling.biencoder import BiEncoderForTraining
    from ..modeling.calibration import calibrate_sparse, calibrate_sparse_scale
    from ..modeling.model import DupMAEModel

    # provenance records the concrete precision
    args = replace(args, precision=training_precision(args.precision, args.use_cpu))
    out = Path(args.output_dir)
    resume_from = resume_point(args, PROVENANCE_NAME, "fine-tuned", kind="dupmae_ir.finetune")
    # stage 2 under torchrun mines together (collectives): not one process after the other, and its
    # barriers wait for the slowest share of the corpus and for the index build
    together = int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.mine_source() == "model"
    training_args = training_arguments(
        args,
        dataloader_drop_last=True,  # equal batches on every process: the gathered groups line up
        ddp_find_unused_parameters=not (args.sparse_weight or args.flops_query or args.flops_doc
                                        or args.bow_loss_weight),
        **({"ddp_timeout": int(WAIT.total_seconds())} if together else {}))
    world = training_args.world_size
    progress = not args.disable_tqdm and training_args.process_index == 0
    t0 = time.time()
    with nullcontext() if together else training_args.main_process_first(desc="training data"):
        out.mkdir(parents=True, exist_ok=True)
        examples, docs, negatives = build_examples(args, out, progress=progress, device=str(training_args.device))
    if training_args.should_save:
        write_negatives(out / NEGATIVES_NAME, negatives)
    data_seconds = time.time() - t0

    set_seed(args.seed)
    retriever, tokenizer = DupMAEModel.from_pretrained(args.model_name_or_path)
    overrides = {"query_max_length": args.query_max_length, "doc_max_length": args.doc_max_length}
    if args.activation:
        overrides["activation"] = args.activation
    if args.dense_dim and args.dense_dim != retriever.dense_dim:
        retriever = DupMAEModel(retriever.mlm, replace(retriever.config, dense_dim=args.dense_dim))
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
    model = BiEncoderForTraining(retriever, args.group_size, args.temperature, args.teacher_temperature,
                                 args.distill_loss, args.dense_weight, args.sparse_weight, args.part_loss_weight,
                                 args.flops_query, args.flops_doc, args.share_negatives,
                                 bow_loss_weight=args.bow_loss_weight)
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
    if args.fold_sparse_weight and retriever.config.activation == "plain_relu" and args.dense_weight \
            and args.sparse_weight and args.sparse_weight != args.dense_weight:
        # the saved model is scored with the unweighted sum; keep its ranking = the trained score's
        import copy

        from ..modeling.calibration import fold_sparse_weight

        retriever = copy.deepcopy(retriever)
        folded = args.sparse_weight / args.dense_weight
        fold_sparse_weight(retriever, folded)
    finetuning = {
        "stage": args.stage, "start": args.model_name_or_path, "train": args.train, "split": args.split,
        "negatives": args.mine_source(), "mine_depth": args.mine_depth, "mine_skip": args.mine_skip,
        "mine_index": args.mine_index or (str(out / MINE_INDEX_NAME) if (out / MINE_INDEX_NAME).is_dir() else None),
        "group_size": args.group_size,
        "temperature": args.temperature, "dense_weight": args.dense_weight, "sparse_weight": args.sparse_weight,
        "part_loss_weight": args.part_loss_weight,
        "sparse_weight_folded": folded, "sparse_calibration": args.sparse_calibration,
        "sparse_scale_calibration": sparse_scale,
        "flops_query": args.flops_query, "flops_doc": args.flops_doc, "bow_loss_weight": args.bow_loss_weight,
        "query_max_length": args.query_max_length, "doc_max_length": args.doc_max_length,
        "queries": len(examples), "holdout_fraction": args.holdout_fraction, "holdout_seed": args.holdout_seed,
        "steps": trainer.state.global_step, "batch_size": args.batch_size,
        "world_size": trainer.args.world_size, "share_negatives": args.share_negatives,
        "learning_rate": args.learning_rate, "head_learning_rate": args.head_learning_rate,
        "epochs": args.num_train_epochs, "seed": args.seed,
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
