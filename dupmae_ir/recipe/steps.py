"""The recipe's steps, each a function of the run's :class:`~.state.Context`: the baselines, DupMAE
pre-training, each arm's fine-tuning stages with their stage-2 mining, and every fine-tuned model through
the product (indexes, searches, TREC runs) into typed :class:`~.rows.Row` records."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .config import training_arguments
from .report import stock_pyserini_command
from .rows import MODELS, Row, model_label
from .state import Context


def add_row(ctx: Context, row: Row, run: dict) -> Row:
    """Score ``run`` on the row's split into ``row`` and append it to the table."""
    from ..runs import ndcg_recall, per_query

    dev = row.split == "dev"
    inputs = ctx.inputs
    qrels, queries = (inputs.dev_qrels, inputs.dev_queries) if dev else (inputs.qrels, inputs.queries)
    row.scores = ndcg_recall(run, qrels)
    row.per_query = per_query(run, qrels, "nDCG@10", list(queries))
    (ctx.results.dev_rows if dev else ctx.results.rows).append(row)
    print(f"[recipe]   {'dev ' if dev else ''}{row.label:<52} nDCG@10 {row.scores['nDCG@10']:.4f}  "
          f"R@100 {row.scores['R@100']:.4f}", flush=True)
    return row


def baselines(ctx: Context) -> None:
    """BM25 (its index also gives stage 1 its negatives), the zero-shot backbone and their fusion."""
    from ..bm25 import bm25_search, build_bm25_index
    from ..runs import fuse

    test, queries = ctx.cfg.data.test, ctx.inputs.queries
    with ctx.timed("bm25"):
        index = build_bm25_index(ctx.inputs.coll, ctx.paths.out / "bm25-index", progress=ctx.progress)
        if test:
            bm25 = bm25_search(index, queries, hits=1000, progress=ctx.progress)
            write_run(ctx, "bm25", bm25, dict(system="bm25", index=str(index)))
            add_row(ctx, Row("bm25", source="Lucene"), bm25)
    if not test:
        return
    with ctx.timed("zero-shot backbone (mean pooling)"):
        zs = exact(ctx, ctx.cfg.data.backbone, pooling="mean").search(queries, k=1000, modes=("dense",))["dense"]
    add_row(ctx, Row("zero-shot", source="in memory"), zs)
    fused = {q: fuse(zs[q], bm25[q], 1000, "normalized", 1.0) for q in queries}
    add_row(ctx, Row("fusion", source="fusion", note="the strongest simple baseline"), fused)


def exact(ctx: Context, model_path: str, pooling: str = "cls", need_sparse: bool | None = None):
    """``model_path``'s exhaustive in-memory searcher over the collection, at the evaluation precision."""
    from ..modeling.model import DupMAEModel
    from ..search.exact import ExactSearcher

    model, tok = DupMAEModel.from_pretrained(model_path)
    sparse = pooling == "cls" if need_sparse is None else need_sparse
    r = ExactSearcher(model, tok, doc_max_length=ctx.cfg.eval.eval_doc_max_length,
                       query_max_length=ctx.cfg.finetune.query_max_length, need_sparse=sparse, pooling=pooling,
                       dtype=ctx.inputs.eval_precision)
    docs = ctx.inputs.docs
    return r.index(list(docs), list(docs.values()), progress=ctx.progress)


def pretrain(ctx: Context) -> Path:
    """DupMAE pre-training of the backbone (:func:`dupmae_ir.train.pretraining.run_pretraining`)."""
    from ..train.pretraining import run_pretraining

    cfg = ctx.cfg
    args = training_arguments(
        (cfg.training, cfg.pretrain), model_name_or_path=cfg.data.backbone,
        corpus=cfg.pretrain.pretrain_corpus or cfg.data.corpus, output_dir=str(ctx.paths.out / "pretrained"),
        precision=ctx.inputs.training_precision, save_steps=10 ** 9, logging_steps=10, overwrite_output_dir=True,
        disable_tqdm=not ctx.progress)
    return run_pretraining(args)


def finetune_arm(ctx: Context, arm: str, start: str, stages: tuple[int, ...]) -> None:
    """Stages 1 (BM25 negatives) and 2 (negatives mined by the stage-1 model) of ``arm`` (``pt`` | ``nopt``)
    from ``start``; each stage's model goes through the product (index, search, runs) and is scored in
    memory too."""
    from ..modeling.model import RepresentationConfig
    from ..train.finetuning import run_finetuning

    cfg, label, out = ctx.cfg, MODELS[arm], ctx.paths.out
    model_path = start
    if stages and stages[0] > 1:  # started from a stage-1 checkpoint: its own negatives first
        with ctx.timed(f"{label}: mining (stage {stages[0]})"):
            mine(ctx, arm, stages[0], model_path, exact(ctx, model_path))
    for stage in stages:
        if stage == 1:
            extra = {"bm25_index": str(out / "bm25-index")}
        else:
            extra = {"negatives": str(out / f"{arm}-stage{stage}-negatives.tsv")}
        args = training_arguments(
            (cfg.training, cfg.finetune), stage=stage, model_name_or_path=model_path, train=cfg.data.corpus,
            split=cfg.data.train_split, output_dir=str(out / f"{arm}-stage{stage}"),
            num_train_epochs=cfg.stage_epochs(stage), precision=ctx.inputs.training_precision,
            overwrite_output_dir=True, save_steps=10 ** 9, disable_tqdm=not ctx.progress, **extra)
        with ctx.timed(f"{label}: fine-tune stage {stage}"):
            model_path = str(run_finetuning(args))
        config = RepresentationConfig.load(model_path)
        plan = cfg.plan
        if plan.query_topk is not None or plan.query_min_weight or plan.query_terms != config.query_terms:
            # the query side (pruning, own pieces), recorded in the checkpoint
            config = replace(config, query_topk=plan.query_topk or config.query_topk,
                             query_min_weight=plan.query_min_weight, query_terms=plan.query_terms)
            config.save(model_path)
        if config.finetuning.get("sparse_scale_calibration") is not None:
            print(f"[recipe]   sparse scale calibration: x{config.finetuning['sparse_scale_calibration']:.4g}",
                  flush=True)
        done = stages[:stages.index(stage) + 1]
        with ctx.timed(f"{label}: in-memory scoring and mining (stage {stage})"):
            retriever = exact(ctx, model_path)
            memory = retriever.search(ctx.inputs.queries, k=1000) if cfg.data.test else None
            if ctx.inputs.dev_queries:
                dev = retriever.search(ctx.inputs.dev_queries, k=1000, modes=("hybrid",))["hybrid"]
                add_row(ctx, Row(arm, done, "hybrid", split="dev"), dev)
            if stage + 1 in stages:  # stage-2 negatives from this model's own retrieval
                mine(ctx, arm, stage + 1, model_path, retriever)
            ground(ctx, arm, done, retriever)
            del retriever
        if cfg.data.test:
            with ctx.timed(f"{label}: encode + index + search (stage {stage})"):
                runs = product(ctx, f"{arm}-stage{stage}", model_path, final=(arm == "pt" and stage == stages[-1]))
            add_model_rows(ctx, arm, done, runs, memory)


def ground(ctx: Context, arm: str, stages: tuple[int, ...], retriever) -> None:
    """The grounded share of the model's test (else dev) queries: their top-10 impact terms that are
    word pieces of their own text (:meth:`~dupmae_ir.inference.DupMAEEncoder.grounded_shares`)."""
    split, queries = ("test", ctx.inputs.queries) if ctx.cfg.data.test else ("dev", ctx.inputs.dev_queries)
    shares = [s for s in retriever.encoder.grounded_shares(list(queries.values())) if s is not None]
    if shares:
        ctx.results.grounding[model_label(arm, stages)] = {
            "split": split, "share": round(sum(shares) / len(shares), 4), "queries": len(shares), "terms": 10,
            "model": arm, "stages": list(stages)}


def mine(ctx: Context, arm: str, stage: int, model_path: str, retriever) -> None:
    """Negatives of ``stage`` from the hybrid top ``mine_depth`` (after ``mine_skip``) of ``retriever``
    (``model_path``'s, already indexed) through :func:`dupmae_ir.train.mining.mine_with_model`."""
    from ..data.training import write_negatives
    from ..train.mining import mine_with_model, mining_depth, negatives_from_run

    ft, coll = ctx.cfg.finetune, ctx.inputs.coll
    train_q, train_qrels = coll.queries(ctx.cfg.data.train_split), coll.qrels(ctx.cfg.data.train_split)
    mined = mine_with_model(model_path, coll, train_q, mining_depth(ft.mine_depth, ft.mine_skip), "hybrid",
                            searcher=retriever)
    negs = negatives_from_run(mined, train_qrels, ft.mine_depth + ft.mine_skip, ft.mine_skip)
    write_negatives(ctx.paths.out / f"{arm}-stage{stage}-negatives.tsv", negs)


def add_model_rows(ctx: Context, arm: str, stages: tuple[int, ...], runs: dict, memory: dict) -> None:
    """The model's dense, impact and hybrid rows from its index runs (each with its in-memory score in the
    note), and the normalised fusion of its dense and impact runs."""
    from ..runs import fuse, ndcg_recall

    for mode in ("dense", "impact", "hybrid"):
        mem = ndcg_recall(memory[mode], ctx.inputs.qrels)["nDCG@10"]
        row = add_row(ctx, Row(arm, stages, mode, source="index"), runs[mode])
        row.note = "DupMAE score: unweighted sum" if mode == "hybrid" else ""
        row.add_note(f"in memory {mem:.4f} ({row.ndcg - mem:+.4f})")
    norm = {q: fuse(runs["dense"][q], runs["impact"][q], 1000, "normalized", 1.0) for q in ctx.inputs.queries}
    add_row(ctx, Row(arm, stages, "fusion", source="index", note="measurement, not the method's"), norm)


def product(ctx: Context, model: str, model_path: str, final: bool = False) -> dict:
    """``model_path`` through the product: FAISS + Lucene indexes, ``DupMAESearcher`` in every mode,
    TREC runs; for the final model also pre-encoded topics and the stock Pyserini command."""
    from ..encode import encode_corpus, encode_queries
    from ..runs import MODES
    from ..search import DupMAESearcher

    cfg, results = ctx.cfg, ctx.results
    index = encode_corpus(ctx.inputs.coll, ctx.paths.index_root / model, encoder=model_path,
                          dtype=ctx.inputs.eval_precision, doc_max_length=cfg.eval.eval_doc_max_length,
                          progress=ctx.progress, overwrite=ctx.overwrite)
    searcher = DupMAESearcher(index, threads=cfg.eval.threads or 2, query_max_length=cfg.finetune.query_max_length)
    runs = searcher.search_all(ctx.inputs.queries, MODES, hits=1000, batch_size=64, progress=ctx.progress)
    for mode, run in runs.items():
        write_run(ctx, f"{model}.{mode}", run, dict(system=f"{model} {mode}", index=str(index), mode=mode))
    results.files[f"index {model}"] = index
    if final:
        queries = encode_queries(ctx.inputs.queries, searcher.encoder, index / "queries", overwrite=True)
        results.files["pre-encoded topics"] = queries
        results.stock_command = stock_pyserini_command(index, queries, searcher.alpha,
                                                       ctx.paths.runs_root / f"{model}.hybrid.pyserini.trec")
    return runs


def write_run(ctx: Context, name: str, run: dict, info: dict) -> None:
    from ..runs import write_trec

    path = write_trec(ctx.paths.runs_root / f"{name}.trec", run, f"dupmae-recipe-{name}",
                      dict(info, recipe=ctx.paths.name), overwrite=ctx.overwrite)
    ctx.results.files[f"run {name}"] = path
