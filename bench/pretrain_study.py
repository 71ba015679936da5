"""``python bench/recipe_study.py pretraining``: DupMAE pre-training settings compared on the SciFact dev split
at equal fine-tuning, against fine-tuning without pre-training (the ``none`` arm).

Each arm is one ``--variant SPEC`` (repeat the flag): comma-separated ``KEY=VALUE`` items, the pre-training
keys overriding the recipe's pre-training settings, and optionally fine-tuning keys that change that arm's
fine-tuning. The item ``none`` makes the arm fine-tune the backbone without pre-training (then only
fine-tuning keys may follow); ``default`` alone is the recipe's pre-training as it is. The plain ``none``
arm is always run (first) as the reference.

    pre-training keys: steps (pretrain_steps), lr (pretrain_lr), head_lr (pretrain_head_lr: the head's lr in
                       pre-training only), enc_mask (pretrain_encoder_mask), dec_mask (pretrain_decoder_mask),
                       bow_weight (pretrain_bow_weight), corpus (pretrain_corpus: a collection, or several
                       joined by '+', e.g. default+beir/nfcorpus: SciFact plus a target's documents)
    fine-tuning keys:  activation (plain_relu | log1p_relu | none; not plain_relu needs
                       --no-sparse-scale-calibration), flops (query and doc), flops_query, flops_doc

    --variant steps=800,lr=1e-4 --variant bow_weight=1,enc_mask=0.15,dec_mask=0.15 --variant none,flops=1

Every arm: the recipe (:class:`dupmae_ir.recipe.Recipe`) with ``test=False``: pre-training from the backbone
(none: skipped), then fine-tuning (``--stages``, default stage 1) on the training queries minus the seeded dev
part ``select`` holds out (``--holdout``, seed 13); then the final checkpoint scored on the dev part,
exhaustive in memory: hybrid, dense and impact nDCG@10, and the grounded share (the share of each dev
query's ten heaviest impact terms that are word pieces of its own text, the mean over queries,
:meth:`dupmae_ir.inference.DupMAEEncoder.grounded_shares`); BM25's dev nDCG@10 beside. Each arm's dev hybrid
is paired-tested against its reference ``none`` arm (the one with the same fine-tuning keys when the list has
it, else the plain one) over the dev queries (:func:`dupmae_ir.eval.significance.compare_per_query`). Flags of
``python -m dupmae_ir.recipe`` (``--backbone``, ``--precision``, ``--pretrain-steps``, ``--doc-max-length``,
...) set the base every arm starts from. An arm whose ``study.json`` holds the same settings is read back, not
re-run; the report is rewritten after every arm. The test split is never read.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import _harness

# the study's own settings of every arm: a recipe flag for one of them is refused
CONTROLLED = ("output", "test", "ablation", "pretrained", "stage1", "holdout_fraction", "report_root",
              "index_root", "runs_root", "seed", "stages")


def _keys() -> dict[str, tuple[tuple[str, ...], object, bool]]:
    """Variant key -> (the recipe settings it sets, its parser, whether it is a pre-training key)."""
    from dupmae_ir import cli
    from dupmae_ir.recipe.config import activation_name

    return {"steps": (("pretrain_steps",), cli.positive_int, True),
            "lr": (("pretrain_lr",), cli.positive_float, True),
            "head_lr": (("pretrain_head_lr",), cli.positive_float, True),
            "enc_mask": (("pretrain_encoder_mask",), cli.fraction, True),
            "dec_mask": (("pretrain_decoder_mask",), cli.fraction, True),
            "bow_weight": (("pretrain_bow_weight",), cli.nonnegative_float, True),
            "corpus": (("pretrain_corpus",), str, True),
            "activation": (("activation",), activation_name, False),
            "flops": (("flops_query", "flops_doc"), cli.nonnegative_float, False),
            "flops_query": (("flops_query",), cli.nonnegative_float, False),
            "flops_doc": (("flops_doc",), cli.nonnegative_float, False)}


@dataclass(frozen=True)
class Variant:
    """One arm: pre-trained or not, and its ``(key, value)`` items in the order of :func:`_keys`."""

    pretrained: bool
    items: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        """``none``, ``none,flops=1``, ``default``, ``steps=800,lr=0.0001``: the canonical spec."""
        shown = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.items]
        head = [] if self.pretrained else ["none"]
        return ",".join(head + shown) or "default"

    @property
    def shown(self) -> str:
        """The label as the report prints it: each corpus of a ``+`` mixture as a portable path."""
        return self.label if not dict(self.items).get("corpus") else self.label.replace(
            f"corpus={dict(self.items)['corpus']}", f"corpus={portable_corpus(dict(self.items)['corpus'])}")

    @property
    def folder(self) -> str:
        """The arm's working folder name: readable, with a hash against clashes of the slug."""
        slug = re.sub(r"[^A-Za-z0-9.]+", "_", self.label.replace("=", ""))[:48].strip("_")
        return f"{slug}-{hashlib.sha1(self.label.encode()).hexdigest()[:6]}"

    @property
    def finetuning(self) -> tuple:
        """Its fine-tuning items: the arms whose fine-tuning is equal share them."""
        keys = _keys()
        return tuple((k, v) for k, v in self.items if not keys[k][2])

    def settings(self) -> dict:
        """The recipe settings the items set."""
        keys = _keys()
        return {name: v for k, v in self.items for name in keys[k][0]}


def portable_corpus(corpus: str) -> str:
    """A pre-training corpus as a report spells it: each collection of a ``+`` mixture a portable path."""
    from dupmae_ir.data.pretrain_corpus import corpus_parts

    return "+".join(_harness.portable(c) for c in corpus_parts(corpus))


def parse_variant(text: str) -> Variant:
    """``--variant``'s type: ``none`` | ``default`` | ``[none,]KEY=VALUE[,KEY=VALUE...]`` (module doc)."""
    keys = _keys()
    parts = [p.strip() for p in text.split(",") if p.strip()]
    pretrained = not (parts and parts[0] == "none")
    parts = parts[1:] if not pretrained or parts[:1] == ["default"] else parts
    given: dict[str, object] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in keys:
            raise argparse.ArgumentTypeError(f"{text!r}: {part!r} is not KEY=VALUE with KEY one of {', '.join(keys)}"
                                             " (or 'none' / 'default' first)")
        if key in given:
            raise argparse.ArgumentTypeError(f"{text!r}: {key} given twice")
        if keys[key][2] and not pretrained:
            raise argparse.ArgumentTypeError(f"{text!r}: {key} is a pre-training key; a 'none' arm takes only "
                                             "fine-tuning keys (activation, flops, flops_query, flops_doc)")
        try:
            given[key] = keys[key][1](value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {key}: {e}") from None
    return Variant(pretrained, tuple((k, given[k]) for k in keys if k in given))


def base_config(args, recipe_argv: list[str]):
    """The config every arm starts from: the recipe's flags in ``recipe_argv`` over the recipe's defaults."""
    from dupmae_ir.errors import UserError
    from dupmae_ir.recipe import RecipeConfig
    from dupmae_ir.recipe.__main__ import build_parser

    try:
        parsed = build_parser().parse_args(recipe_argv)
    except UserError as e:  # one line, as the recipe's command prints it
        raise SystemExit(f"error: {e}") from None
    given = {k: v for k, v in vars(parsed).items() if k in RecipeConfig.settings()}
    bad = sorted(set(given) & set(CONTROLLED))
    if bad:
        raise SystemExit(f"error: --{bad[0].replace('_', '-')}: the study sets it for every arm (fix: leave it out; "
                         "use the study's --stages, --seed, --holdout, --work)")
    return RecipeConfig.of(**given)


def arm_config(variant: Variant, base, args):
    """The recipe config of one arm: a selection run (dev rows only) in its own folder under ``--work``."""
    from dupmae_ir.recipe.config import PretrainSettings

    cfg = base if variant.pretrained else dataclasses.replace(base, pretrain=PretrainSettings())
    cfg = cfg.replace(output=f"{args.work}/pretraining/{variant.folder}", report_root=f"{args.work}/eval",
                      test=False, ablation=False, holdout_fraction=args.holdout, seed=args.seed, stages=args.stages,
                      **variant.settings())
    if not variant.pretrained:  # fine-tuned straight from the backbone: the recipe's "pt" arm, started there
        cfg = cfg.replace(pretrained=cfg.data.backbone)
    if cfg.finetune.activation != "plain_relu" and cfg.finetune.sparse_scale_calibration:
        raise SystemExit(f"error: --variant {variant.label}: activation {cfg.finetune.activation} with sparse scale "
                         "calibration (plain_relu only) (fix: add --no-sparse-scale-calibration)")
    return cfg


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def score_dev(model_path: Path, cfg, dev_q: dict, dev_qrels: dict, docs: dict) -> dict:
    """Dense, impact and hybrid dev nDCG@10 (with per-query values) and the grounded share of the dev
    queries, exhaustive in memory at the recipe's evaluation precision."""
    import torch

    from dupmae_ir.modeling.model import DupMAEModel
    from dupmae_ir.recipe.state import precisions
    from dupmae_ir.runs import ndcg_recall, per_query
    from dupmae_ir.search.exact import ExactSearcher

    model, tok = DupMAEModel.from_pretrained(str(model_path))
    retriever = ExactSearcher(model, tok, doc_max_length=cfg.eval.eval_doc_max_length,
                              query_max_length=cfg.finetune.query_max_length, dtype=precisions(cfg)[1])
    retriever.index(list(docs), list(docs.values()), progress=False)
    with torch.inference_mode():
        runs = retriever.search(dev_q, k=1000)
        shares = [s for s in retriever.encoder.grounded_shares(list(dev_q.values())) if s is not None]
    out = {mode: {**ndcg_recall(run, dev_qrels), "per_query": per_query(run, dev_qrels, "nDCG@10", list(dev_q))}
           for mode, run in runs.items()}
    out["grounded"] = {"share": round(statistics.mean(shares), 4) if shares else None, "queries": len(shares),
                       "terms": 10}
    return out


def run_arm(variant: Variant, cfg, dev: tuple) -> dict:
    """One arm through the recipe and the dev scoring, or its ``study.json`` read back (same settings)."""
    from dupmae_ir.provenance import provenance, write_json
    from dupmae_ir.recipe import Recipe

    out = Path(cfg.layout.output)
    config = _jsonable(cfg.flat())
    study = out / "study.json"
    if study.exists() and json.loads(study.read_text(encoding="utf-8")).get("config") == config:
        print(f"[pretraining] {variant.label}: read back from {study}", flush=True)
        return json.loads(study.read_text(encoding="utf-8"))
    start = time.time()
    saved = out / "results.json"
    result = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
    if result.get("config") != config:  # not trained yet with these settings (a stopped scoring resumes here)
        result = Recipe(cfg, progress=False, overwrite=True).run()
    assert not result["rows"] and not result["per_query"]["test"], "a selection run must not read the test split"
    scored = time.time()
    scores = score_dev(out / f"pt-stage{cfg.plan.stages[-1]}", cfg, *dev)
    recipe_hybrid = result["dev_rows"][-1]["nDCG@10"]  # the recipe's own dev score of the same model
    if abs(recipe_hybrid - scores["hybrid"]["nDCG@10"]) > 1e-3:
        print(f"[pretraining] warning: dev hybrid {scores['hybrid']['nDCG@10']:.4f} here, {recipe_hybrid:.4f} in "
              "the recipe's run", flush=True)
    record = {"variant": variant.label, "pretrained": variant.pretrained, "config": config, "dev": scores,
              "recipe_dev_rows": result["dev_rows"],
              "seconds": {"pre-training": result["times"].get("dupmae pre-training"),
                          "recipe": result["times"]["total"], "scoring": round(time.time() - scored, 1),
                          "this run": round(time.time() - start, 1)}}
    write_json(study, provenance(kind="bench.pretraining_study", **record))
    return json.loads(study.read_text(encoding="utf-8"))


def reference(variant: Variant, arms: list[Variant]) -> Variant:
    """The ``none`` arm ``variant`` is tested against: the one with its fine-tuning, else the plain one."""
    return next((a for a in arms if not a.pretrained and a.finetuning == variant.finetuning), Variant(False))


def pretraining(args, recipe_argv: list[str]) -> None:
    """The study (module doc): every arm in turn, the report rewritten after each."""
    from dupmae_ir.bm25 import bm25_search, build_bm25_index
    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.data.splits import dev_split
    from dupmae_ir.runs import ndcg_recall

    base = base_config(args, recipe_argv)
    arms = list(dict.fromkeys([Variant(False), *(args.variant or [])]))  # the plain none arm first, no repeats
    configs = [arm_config(v, base, args) for v in arms]  # every arm's settings checked before any work
    coll = resolve(base.data.corpus)
    dev_q, dev_qrels = dev_split(coll, base.data.train_split, args.holdout, base.finetune.holdout_seed)
    docs = {d.id: doc_text(d) for d in coll.iter_docs()}
    index = build_bm25_index(coll, Path(args.work) / "pretraining" / "bm25-index", progress=False)
    bm25 = ndcg_recall(bm25_search(index, dev_q, hits=1000, progress=False), dev_qrels)
    print(f"[pretraining] {len(arms)} arms; dev: {len(dev_q)} queries; BM25 dev nDCG@10 {bm25['nDCG@10']:.4f}",
          flush=True)
    done: dict[Variant, dict] = {}
    for variant, cfg in zip(arms, configs):
        print(f"[pretraining] arm {variant.label} -> {cfg.layout.output}", flush=True)
        done[variant] = record = run_arm(variant, cfg, (dev_q, dev_qrels, docs))
        s = record["seconds"]
        print(f"[pretraining] {variant.label}: dev hybrid {record['dev']['hybrid']['nDCG@10']:.4f}, dense "
              f"{record['dev']['dense']['nDCG@10']:.4f}, impact {record['dev']['impact']['nDCG@10']:.4f}, grounded "
              f"{record['dev']['grounded']['share']}; wall {s['recipe'] + s['scoring']:.0f} s (pre-training "
              f"{s['pre-training'] or 0:.0f} s, recipe {s['recipe']:.0f} s, scoring {s['scoring']:.0f} s)", flush=True)
        write(args, base, arms, done, bm25, len(dev_q), len(docs))


def write(args, base, arms: list[Variant], done: dict, bm25: dict, n_dev: int, n_docs: int) -> None:
    """The report: every arm run so far (losers included), its paired test against its ``none`` arm."""
    from dupmae_ir.eval.significance import compare_per_query, format_p
    from dupmae_ir.recipe.state import precisions

    precision = precisions(base)  # what "auto" resolved to on this machine

    stages = "+".join(map(str, args.stages))
    head = ["arm", "pre-training (steps, lr, head lr, masks enc/dec, bow weight, corpus)", "fine-tuning",
            f"dev hybrid (stage {stages})", "dense", "impact", "grounded share",
            "hybrid - none, per query (95% CI)", "t-test p", "randomisation p", "wall s (pre-training)"]
    rows = [["BM25 (Pyserini, flat)", "", "", f"{bm25['nDCG@10']:.4f}", "", "", "", "", "", "", ""]]
    wins = []
    for v in arms:
        if v not in done:
            continue
        r, cfg = done[v], done[v]["config"]
        dev, s = r["dev"], r["seconds"]
        pre = ("none" if not v.pretrained else
               f"{cfg['pretrain_steps']}, {cfg['pretrain_lr']:g}, "
               f"{cfg['pretrain_head_lr'] or cfg['head_learning_rate'] or cfg['pretrain_lr']:g}, "
               f"{cfg['pretrain_encoder_mask']:g}/{cfg['pretrain_decoder_mask']:g}, "
               f"{'preset' if cfg['pretrain_bow_weight'] is None else format(cfg['pretrain_bow_weight'], 'g')}, "
               f"{portable_corpus(cfg['pretrain_corpus'] or cfg['corpus'])}")
        ft = f"{cfg['activation']}, FLOPS {cfg['flops_query']:g}/{cfg['flops_doc']:g}"
        ref = reference(v, arms)
        test = cells = None
        if v != ref and ref in done:
            test = compare_per_query(done[ref]["dev"]["hybrid"]["per_query"], dev["hybrid"]["per_query"])
            vs = "" if ref == Variant(False) else f" vs `{ref.shown}`"
            cells = [f"{test.delta:+.4f} ({test.ci_low:+.4f}, {test.ci_high:+.4f}){vs}", format_p(test.p_t),
                     format_p(test.p_rand)]
            if test.delta > 0 and test.p_t < 0.05:
                wins.append(v.shown)
        grounded = dev["grounded"]["share"]
        rows.append([f"`{v.shown}`", pre, ft, f"{dev['hybrid']['nDCG@10']:.4f}", f"{dev['dense']['nDCG@10']:.4f}",
                     f"{dev['impact']['nDCG@10']:.4f}", "-" if grounded is None else f"{grounded:.1%}",
                     *(cells or ["(reference)", "", ""]),
                     f"{s['recipe'] + s['scoring']:.0f} ({s['pre-training'] or 0:.0f})"])
    ran = [v for v in arms if v in done]
    best = max(ran, key=lambda v: done[v]["dev"]["hybrid"]["nDCG@10"])
    body = [*_harness.markdown_table(head, rows), "",
            f"Best dev hybrid: `{best.shown}` ({done[best]['dev']['hybrid']['nDCG@10']:.4f}). Arms above their `none` "
            f"reference at p < 0.05 (paired t-test): {', '.join(f'`{w}`' for w in wins) or 'none'}.", "",
            f"{len(ran)} of {len(arms)} arms run. Every arm: the recipe (`dupmae_ir.recipe`, selection run) from "
            f"backbone `{_harness.portable(base.data.backbone)}`, pre-training as its row says, then fine-tuning "
            f"stage {stages} with the recipe's settings and seed {args.seed} on the training queries of "
            f"`{_harness.portable(base.data.corpus)}` minus the dev part ({args.holdout:.0%}, seed "
            f"{base.finetune.holdout_seed}: {n_dev} queries); scored on the dev part exhaustively in memory over "
            f"{n_docs} documents (training {precision[0]}, encoding {precision[1]}). Grounded "
            "share: the share of a dev query's ten heaviest impact terms that are word pieces of its own text, mean "
            "over the queries. Paired tests over the dev queries against the `none` arm with the same fine-tuning "
            "(scipy, `dupmae_ir.eval.significance`). Head lr: pre-training's (`--pretrain-head-lr`, else "
            "`--head-learning-rate`). The test split is not read. Wall time: the recipe run (pre-training, "
            "fine-tuning, its dev scoring) plus this study's scoring."]
    text = _harness.header("DupMAE pre-training chosen on the SciFact dev split",
                           "Pre-training settings (steps, lr, masks, bag-of-words loss weight, corpus) at equal "
                           "fine-tuning, against no pre-training, with the bag-of-words' grounding "
                           "(`bench/recipe_study.py pretraining`).")
    _harness.write_report(args.report, text + "\n" + "\n".join(body) + "\n")
    print("\n".join(body), flush=True)


def add_parser(sub) -> None:
    """The ``pretraining`` subcommand's flags (the shared --work, --holdout, --seed are added by the caller)."""
    from dupmae_ir.recipe.config import stage_list

    s = sub.add_parser("pretraining", help="pre-training settings on dev, at equal fine-tuning",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--variant", action="append", type=parse_variant, metavar="SPEC",
                   help="one arm (repeat the flag): [none,|default,]KEY=VALUE,... (see above); the plain 'none' "
                        "arm is always run")
    s.add_argument("--stages", type=stage_list, default=(1,), help="fine-tuning stages of every arm: 1 or 1,2")
    s.add_argument("--report", default="eval/pretraining-selection.md")
