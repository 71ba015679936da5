"""The route's steps, each a function of the run (:class:`~.run.Adaptation`) returning its settings (what
decides its output, inputs fingerprinted) and doing its work only when :meth:`~.run.Adaptation.step` finds
it unfinished. Pre-training and the backbone's in-memory scoring are the recipe's own steps
(:func:`dupmae_ir.recipe.steps.pretrain`, :func:`~dupmae_ir.recipe.steps.exact`), on the recipe context
the run builds; fine-tuning maps onto ``FinetuneArguments`` through
:func:`dupmae_ir.recipe.config.training_arguments`."""
from __future__ import annotations

from pathlib import Path

from ..outputs import OutputKind
from .config import SERVED_MODE

START_META = "dupmae_start.json"
START_OUTPUT = OutputKind("materialised start checkpoint", START_META, ("dupmae_ir.adapt.start",))


def checkpoint_id(path: str | Path) -> str:
    """A short fingerprint of a checkpoint's files (weights by content)."""
    from ..fingerprint import checkpoint_fingerprint, fingerprint_id
    from ..modeling.backbone import resolve_model_path

    return fingerprint_id(checkpoint_fingerprint(resolve_model_path(str(path))))


def files_id(*paths: Path) -> str:
    from ..fingerprint import file_digest, fingerprint_id

    return fingerprint_id([file_digest(p) for p in paths])


def pretrain(run) -> str:
    """DupMAE pre-training of ``--checkpoint`` on the target corpus (the recipe's step); returns its folder."""
    from ..recipe.steps import pretrain as recipe_pretrain

    rc, out = run.ctx.cfg, run.cfg.out / "pretrained"
    settings = {"steps": run.cfg.pretrain_steps, "lr": rc.pretrain.pretrain_lr, "seed": rc.training.seed,
                "batch_size": rc.pretrain.pretrain_batch_size, "max_seq_length": rc.pretrain.pretrain_max_seq_length,
                "precision": run.ctx.inputs.training_precision,
                "inputs": {"checkpoint": run.inputs["checkpoint"], "corpus": run.inputs["corpus"]}}
    run.step("pre-training", settings, {"checkpoint": out}, lambda: recipe_pretrain(run.ctx))
    return str(out)


def materialise_start(run, start: str) -> str:
    """The start as a DupMAE checkpoint folder (safetensors with the masked-LM head the fine-tuning starts
    with), written to ``OUTPUT/start`` when ``start`` is not one already (e.g. the bundled sentence
    encoder): interpolation needs the same tensors on both sides."""
    from ..modeling.backbone import resolve_model_path
    from ..modeling.model import CONFIG_NAME

    path = Path(resolve_model_path(start))
    if path.is_dir() and (path / CONFIG_NAME).is_file() and (path / "model.safetensors").is_file():
        return start
    out = run.cfg.out / "start"

    def work():
        from ..modeling.model import DupMAEModel
        from ..outputs import atomic_output_dir
        from ..provenance import provenance, write_json

        with atomic_output_dir(out, START_OUTPUT, overwrite=True) as tmp:
            model, tokenizer = DupMAEModel.from_pretrained(start)
            model.save_pretrained(tmp, tokenizer=tokenizer)
            write_json(tmp / START_META, provenance(kind=START_OUTPUT.kinds[0], start=str(start)))

    run.step("start checkpoint", {"inputs": {"checkpoint": run.inputs["checkpoint"]}}, {"checkpoint": out}, work)
    return str(out)


def pseudo_queries(run) -> Path:
    """Seeded pseudo-queries (titles, else first sentences) as a BEIR training folder ``OUTPUT/pseudo-queries``."""
    from .pseudo import PSEUDO_OUTPUT, sample_pseudo_queries, write_training_folder

    cfg, out = run.cfg, run.cfg.out / "pseudo-queries"
    settings = {"n": cfg.pseudo_queries, "seed": cfg.seed, "query_words": cfg.query_words,
                "inputs": {"corpus": run.inputs["corpus"]}}

    def work():
        from ..errors import UserError
        from ..outputs import atomic_output_dir

        queries = sample_pseudo_queries(run.doc_list, cfg.pseudo_queries, cfg.seed, cfg.query_words)
        if len(queries) < cfg.batch_size:
            raise UserError(cfg.corpus, f"only {len(queries)} documents have a title or a sentence to ask with, "
                                        f"fewer than one batch ({cfg.batch_size})", "lower --batch-size")
        with atomic_output_dir(out, PSEUDO_OUTPUT, overwrite=True) as tmp:
            write_training_folder(tmp, queries, {"corpus": cfg.corpus, **settings})

    run.step("pseudo-queries", settings, {"folder": out}, work)
    return out


def bm25_index(run) -> Path:
    """The target's Lucene BM25 index (:func:`dupmae_ir.bm25.build_bm25_index`): the teacher's, then the
    served fusion's."""
    from ..bm25 import build_bm25_index

    out = run.cfg.index_root / "bm25"
    run.step("bm25 index", {"inputs": {"corpus": run.inputs["corpus"]}}, {"index": out},
             lambda: build_bm25_index(run.coll, out, force=True, progress=run.cfg.progress))
    return out


def teacher(run, pseudo: Path, bm25: Path) -> Path:
    """The teacher file ``OUTPUT/teacher.tsv``: BM25 + untouched backbone, top ``--teacher-depth`` per pseudo-query."""
    from .teacher import TEACHER_KIND, is_teacher_file, is_teacher_sidecar, source_ranks, teacher_lines, teacher_run

    cfg, ctx, out = run.cfg, run.ctx, run.cfg.out / "teacher.tsv"
    settings = {"depth": cfg.teacher_depth, "doc_max_length": cfg.doc_max_length,
                "query_max_length": cfg.query_max_length, "precision": ctx.inputs.eval_precision,
                "bm25": {"k1": 0.9, "b": 0.4}, "fusion": "normalize",
                "inputs": {"backbone": run.inputs["teacher"], "corpus": run.inputs["corpus"],
                           "pseudo_queries": files_id(pseudo / "queries.jsonl", pseudo / "qrels" / "train.tsv")}}

    def work():
        import json

        from ..bm25 import bm25_search
        from ..outputs import claim_output_file
        from ..provenance import provenance
        from ..recipe.steps import exact
        from .pseudo import read_pseudo_queries

        queries, sources = read_pseudo_queries(pseudo)
        with claim_output_file(out, is_teacher_file, True, "teacher file", is_teacher_sidecar) as claim:
            bm25_run = bm25_search(bm25, queries, hits=cfg.teacher_depth, progress=cfg.progress)
            searcher = exact(ctx, cfg.teacher_backbone, pooling="mean")
            dense = searcher.search(queries, k=cfg.teacher_depth, modes=("dense",))["dense"]
            fused, added = teacher_run(bm25_run, dense, sources, cfg.teacher_depth)
            first = sum(r == 1 for r in source_ranks(fused, sources).values())
            print(f"[adapt]   teacher: source document first for {first} of {len(fused)} pseudo-queries, added "
                  f"below the depth for {len(added)}", flush=True)
            claim.write(teacher_lines(fused), json.dumps(provenance(
                kind=TEACHER_KIND, teacher=f"bm25 + {cfg.teacher_backbone} (mean pooling), normalised fusion",
                queries=len(fused), source_first=first, source_added=len(added), **settings), indent=2) + "\n")

    run.step("teacher scores", settings, {"file": out}, work)
    return out


def finetune(run, start: str, pseudo: Path, teacher_file: Path) -> str:
    """Stage-3 distillation from the teacher file on the pseudo-queries, from ``start``, into ``OUTPUT/finetuned``."""
    from ..recipe.config import training_arguments

    cfg, ctx, out = run.cfg, run.ctx, run.cfg.out / "finetuned"
    rc = ctx.cfg
    settings = {"lr": cfg.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "group_size": cfg.group_size,
                "teacher_temperature": cfg.teacher_temperature, "seed": cfg.seed,
                "query_max_length": cfg.query_max_length, "doc_max_length": rc.finetune.doc_max_length,
                "head_lr": rc.training.head_learning_rate, "part_loss_weight": rc.finetune.part_loss_weight,
                "precision": ctx.inputs.training_precision,
                "inputs": {"start": checkpoint_id(start), "teacher": files_id(teacher_file),
                           "pseudo_queries": files_id(pseudo / "queries.jsonl", pseudo / "qrels" / "train.tsv")}}

    def work():
        from ..train.finetuning import run_finetuning

        args = training_arguments(
            (rc.training, rc.finetune), stage=3, model_name_or_path=start, train=str(pseudo),
            corpus=run.coll.reference, split="train", teacher_scores=str(teacher_file),
            teacher_temperature=cfg.teacher_temperature, output_dir=str(out), num_train_epochs=cfg.epochs,
            precision=ctx.inputs.training_precision, overwrite_output_dir=True, save_steps=10 ** 9,
            logging_steps=10, disable_tqdm=not cfg.progress)
        run_finetuning(args)

    run.step("stage-3 fine-tuning", settings, {"checkpoint": out}, work)
    return str(out)


def interpolate(run, start: str, finetuned: str) -> Path:
    """WiSE-FT: ``OUTPUT/adapted`` = (1 - alpha) start + alpha fine-tuned (:mod:`.interpolate`)."""
    from .interpolate import ADAPTED_OUTPUT, INTERPOLATION_META, interpolate_checkpoints

    out = run.cfg.out / "adapted"
    settings = {"alpha": run.cfg.interpolate,
                "inputs": {"start": checkpoint_id(start), "finetuned": checkpoint_id(finetuned)}}

    def work():
        from ..outputs import atomic_output_dir
        from ..provenance import provenance, write_json

        with atomic_output_dir(out, ADAPTED_OUTPUT, overwrite=True) as tmp:
            tensors = interpolate_checkpoints(start, finetuned, run.cfg.interpolate, tmp)
            write_json(tmp / INTERPOLATION_META, provenance(
                kind=ADAPTED_OUTPUT.kinds[0], start=str(start), finetuned=str(finetuned), tensors=tensors,
                rule="(1 - alpha) * start + alpha * finetuned (WiSE-FT)", **settings))

    run.step("interpolation", settings, {"checkpoint": out}, work)
    return out


def index(run, adapted: Path, bm25: Path) -> Path:
    """The target encoded with the adapted checkpoint into ``INDEXES/dupmae`` (FAISS + Lucene impact), its
    provenance naming the served fusion (``hybrid+bm25`` with ``INDEXES/bm25``)."""
    from ..encode import encode_corpus

    cfg, out = run.cfg, run.cfg.index_root / "dupmae"
    serving = {"mode": SERVED_MODE, "bm25_index": str(bm25.resolve()), "command": run.search_command()}
    settings = {"doc_max_length": cfg.doc_max_length, "precision": run.ctx.inputs.eval_precision,
                "serving": serving, "inputs": {"checkpoint": checkpoint_id(adapted), "corpus": run.inputs["corpus"]}}
    run.step("index", settings, {"index": out}, lambda: encode_corpus(
        run.coll, out, encoder=str(adapted), dtype=run.ctx.inputs.eval_precision, doc_max_length=cfg.doc_max_length,
        progress=cfg.progress, overwrite=True,
        extra_provenance={"serving": serving, "adaptation": str(cfg.out.resolve())}))
    return out
