"""The recipe's settings: :class:`RecipeConfig`, composed of small parts whose defaults are the documented CPU recipe.

The training parts (:class:`TrainingSettings`, :class:`PretrainSettings`, :class:`FinetuneSettings`) are
subsets of :mod:`dupmae_ir.train.arguments`' dataclasses with the recipe's defaults: each field names the
field it fills there (``source``, by default its own name), takes its help from there unless the recipe says
more, and :func:`training_arguments` builds the training dataclass from the part, so nothing is copied by
hand. The other parts are the recipe's own (data, stages, evaluation, layout).

Every field's name is unique across the parts: it is the command-line flag (``--pretrain-lr``), the key of
``results.json``'s ``config`` and a keyword of :meth:`RecipeConfig.of` / :meth:`RecipeConfig.replace`.
"""
from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path

from ..modeling import QUERY_TERMS
from ..precision import TRAINING_DTYPES
from ..train.arguments import FinetuneArguments, PretrainArguments, TrainArguments

RECIPE_PRECISIONS = tuple(p for p in TRAINING_DTYPES if p != "fp16")  # a CPU recipe: no fp16


def setting(default, help: str = "", source: str | None = None, **metadata):
    """A recipe field: ``help`` for ``--help`` (a training part's field may leave it to its ``source``),
    ``parse`` (the argparse type: a name in :mod:`dupmae_ir.cli`, or a function), ``choices``,
    ``stage1_only`` (fine-tuning: passed to stage 1 alone), ``override`` (None leaves the value an earlier
    part gave the same ``source``)."""
    return field(default=default, metadata={"help": help, "source": source, **metadata})


def training_part(arguments_class):
    """Class decorator: a dataclass of fields of ``arguments_class`` (by ``source`` or by name) with the
    recipe's defaults; a field that is not one of ``arguments_class`` fails at import."""
    def wrap(cls):
        cls = dataclass(cls)
        targets = {f.name: f for f in dataclasses.fields(arguments_class)}
        for f in dataclasses.fields(cls):
            source = f.metadata.get("source") or f.name
            if source not in targets:
                raise TypeError(f"{cls.__name__}.{f.name}: {arguments_class.__name__} has no field {source!r}")
            help = f.metadata.get("help") or targets[source].metadata.get("help", "")
            f.metadata = types.MappingProxyType({**f.metadata, "source": source, "help": help})
        cls.arguments_class = arguments_class
        return cls
    return wrap


def training_arguments(parts, stage: int | None = None, **extra):
    """The training dataclass of ``parts`` (the last part's ``arguments_class``, a subclass of the others')
    with their values, and ``extra`` on top; at ``stage`` > 1 the ``stage1_only`` fields keep the training
    dataclass's defaults."""
    kw = {}
    for part in parts:
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if f.metadata.get("override") and value is None:  # not given: the earlier part's value stands
                continue
            if not (f.metadata.get("stage1_only") and stage is not None and stage > 1):
                kw[f.metadata["source"]] = value
    target = parts[-1].arguments_class
    assert all(issubclass(target, p.arguments_class) for p in parts), "the most specific part goes last"
    return target(**{**kw, **({} if stage is None else {"stage": stage}), **extra})


def activation_name(text: str) -> str:
    """``--activation``: a bag-of-words activation (:data:`dupmae_ir.modeling.bow.ACTIVATIONS`)."""
    import argparse

    from ..modeling.bow import canonical_activation  # torch: at parse time only, never at import

    try:
        return canonical_activation(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclass
class DataSettings:
    """model and data"""

    backbone: str = setting("default", "Backbone to pre-train and fine-tune ('default': the offline MiniLM-L6).")
    corpus: str = setting("default", "Collection with corpus, train and test splits ('default': the bundled SciFact).")
    train_split: str = setting("train", "Split of the training queries and qrels.")
    test_split: str = setting("test", "Split of the test queries and qrels.")
    # False: a selection run (dev rows only; the test split is never read, nothing is indexed)
    test: bool = setting(True, "Score the test split (--no-test: a selection run, dev rows only; the test split is "
                               "never read, nothing is indexed; needs --holdout-fraction).")


@training_part(TrainArguments)
class TrainingSettings:
    """pre-training and fine-tuning"""

    precision: str = setting("auto", "Training precision, pre-training and fine-tuning (auto: bf16 on GPUs and on "
                                     "CPUs with native bf16 instructions (AVX512-BF16/AMX); else fp32).",
                             choices=RECIPE_PRECISIONS)
    # fresh MLM head/decoder layer lr in pre-training and fine-tuning (None, or 0 given: one lr)
    head_learning_rate: float | None = setting(
        1e-3, "Peak lr of the parameters outside the backbone body (the fresh MLM head, the decoder layer), in "
              "pre-training and fine-tuning (0 = one lr for all, the paper's).", parse="nonnegative_float")
    seed: int = setting(42, "Seed of pre-training and fine-tuning.", parse="nonnegative_int")

    def __post_init__(self):
        self.head_learning_rate = self.head_learning_rate or None  # 0: one lr for all


@training_part(PretrainArguments)
class PretrainSettings:
    """pre-training"""

    pretrain_steps: int = setting(240, "DupMAE pre-training steps.", "max_steps", parse="positive_int")
    pretrain_batch_size: int = setting(16, "DupMAE pre-training batch size.", "batch_size", parse="positive_int")
    pretrain_max_seq_length: int = setting(128, "Pieces per pre-training example.", "max_seq_length",
                                           parse="max_length")
    pretrain_lr: float = setting(1e-4, "DupMAE pre-training learning rate.", "learning_rate", parse="positive_float")
    # DupMAE pre-training on another corpus (domain adaptation); None: --corpus
    pretrain_corpus: str | None = setting(None, "Pre-train on this collection's documents instead of --corpus (domain "
                                                "adaptation: the corpus the model will search, no labels needed; "
                                                "several joined by '+', e.g. default+beir/nfcorpus).",
                                          "corpus")
    # pre-training only: None keeps --head-learning-rate (the pre-training study varies it at equal fine-tuning)
    pretrain_head_lr: float | None = setting(None, "Peak lr of the fresh MLM head and decoder layer in pre-training "
                                                   "only (none: --head-learning-rate).", "head_learning_rate",
                                             parse="positive_float", override=True)
    pretrain_encoder_mask: float = setting(0.30, "Encoder whole-word masking rate of pre-training.",
                                           "encoder_mlm_probability", parse="fraction")
    pretrain_decoder_mask: float = setting(0.50, "Decoder masking rate of pre-training.", "decoder_mlm_probability",
                                           parse="fraction")
    pretrain_bow_weight: float | None = setting(None, "Weight of DupMAE's bag-of-words loss in pre-training (none: "
                                                      "the 'code' preset's 0.1).", "bow_loss_weight",
                                                parse="nonnegative_float")


@training_part(FinetuneArguments)
class FinetuneSettings:
    """fine-tuning"""

    epochs: float = setting(2.0, "Epochs of stage 1 (chosen on the dev split, eval/finetune-dev.md).",
                            "num_train_epochs", parse="positive_float")
    batch_size: int = setting(16, parse="positive_int")
    group_size: int = setting(8, "1 positive + negatives per query.", parse="positive_int")
    learning_rate: float = setting(1.5e-4, "Fine-tuning peak learning rate.", parse="positive_float")
    temperature: float = setting(1.0, parse="positive_float")
    sparse_weight: float = setting(1.0, parse="nonnegative_float")
    # each part also trained alone (0: the paper's loss on the combined score only)
    part_loss_weight: float = setting(1.0, parse="nonnegative_float")
    # FLOPS sparsity regularisation of query / document bag-of-words in every stage; 0: the paper's loss. Kept
    # at 0: 1.0 won the stage-1 dev study (eval/flops-selection.md) but stages 1+2 were not studied on dev
    flops_query: float = setting(0.0, "FLOPS regularisation weight on query bag-of-words, every stage (0: the "
                                      "paper's loss; 1.0 won a stage-1 dev study, eval/flops-selection.md).",
                                 parse="nonnegative_float")
    flops_doc: float = setting(0.0, "FLOPS regularisation weight on document bag-of-words, every stage (0: the "
                                    "paper's loss; 1.0 won a stage-1 dev study, eval/flops-selection.md).",
                               parse="nonnegative_float")
    # DupMAE's bag-of-words loss kept in every fine-tuning stage; 0: the paper's fine-tuning
    bow_loss_weight: float = setting(0.0, "Weight of DupMAE's bag-of-words loss kept in fine-tuning, every stage (0: "
                                          "the paper's loss; 0.1 grounded more query terms on the dev split without "
                                          "meeting the rule to become the default, eval/grounding-dev.md).",
                                     parse="nonnegative_float")
    # the bag-of-words activation set at stage 1 (stage 2 keeps the stage-1 checkpoint's)
    activation: str = setting("plain_relu", "Bag-of-words activation from stage 1 on: plain_relu | log1p_relu | none.",
                              parse=activation_name, stage1_only=True)
    sparse_calibration: float | None = setting(0.02, "Stage 1: the MLM-head bias shift target (0 = off).",
                                               parse="nonnegative_float", stage1_only=True)
    # stage 1: start the sparse part at its best-loss scale (finetune --sparse-scale-calibration)
    sparse_scale_calibration: bool = setting(True, "Stage 1 starts with the sparse part scaled to its best in-batch "
                                                   "loss (finetune --sparse-scale-calibration).", stage1_only=True)
    mine_depth: int = setting(50, parse="positive_int")
    mine_skip: int = setting(0, parse="nonnegative_int")
    # None: the backbone's 0.1; 0: off, ~1.7x faster CPU steps
    dropout: float | None = setting(0.0, "Backbone dropout while fine-tuning (0: off, ~1.7x faster steps on CPUs; "
                                         "0.1 = the backbone's).", parse="unit_float")
    doc_max_length: int = setting(128, "Passage pieces in training.", parse="max_length")
    query_max_length: int = setting(32, "Query pieces, in training and at evaluation.", parse="max_length")
    # > 0: fine-tune without this seeded dev part of the training queries, and report it
    holdout_fraction: float = setting(0.0, "Fine-tune without this seeded part of the training queries and report "
                                           "it as a dev split (for choosing settings; 0: train on every training "
                                           "query).", parse="fraction")
    holdout_seed: int = setting(13, parse="nonnegative_int")

    def __post_init__(self):
        self.sparse_calibration = self.sparse_calibration or None  # 0: off


def stage_list(text: str) -> tuple[int, ...]:
    """``--stages 1,2``."""
    import argparse

    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of stages (e.g. 1,2)") from None


@dataclass
class StageSettings:
    """stages"""

    stages: tuple[int, ...] = setting((1, 2), "Comma-separated fine-tuning stages.", parse=stage_list)
    stage2_epochs: float | None = setting(2.0, "Epochs of stage 2 (chosen on the dev split, "
                                               "eval/stage2-selection.md).", parse="positive_float")
    # also fine-tune the backbone without DupMAE pre-training, at every stage of `stages` with the same settings
    # and seed (its stage 2 mines with its own stage-1 model): each stage's pre-trained model has its equal
    ablation: bool = setting(True, "Also fine-tune the backbone without pre-training at every stage, with the same "
                                   "settings and seed, and test each pair (--no-ablation: skip it).")
    pretrained: str | None = setting(None, "Start from this DupMAE pre-trained checkpoint instead of pre-training.")
    stage1: str | None = setting(None, "Start at stage 2 from this stage-1 checkpoint (no pre-training, no stage 1).")
    # query pruning written into each fine-tuned checkpoint, chosen on the dev split (eval/query-pruning.md);
    # None: keep the checkpoint's (1,024 terms, Lucene's clause limit; the paper keeps every term)
    query_topk: int | None = setting(16, "Keep each query's N largest impact weights, written into each fine-tuned "
                                         "checkpoint (chosen on the dev split; 1024 keeps all the paper's terms that "
                                         "Lucene accepts).", parse="positive_int")
    query_min_weight: float = setting(0.0, "Drop query impact weights below this (written into each fine-tuned "
                                           "checkpoint).", parse="nonnegative_float")
    query_terms: str = setting("all", "Query bag-of-words written into each fine-tuned checkpoint: 'all' (the "
                                      "model's expansion) or 'own' (only the query's own word pieces).",
                               choices=QUERY_TERMS)


@dataclass
class EvalSettings:
    """evaluation"""

    eval_doc_max_length: int = setting(128, "Passage pieces at evaluation.", parse="max_length")
    eval_precision: str = setting("auto", "Encoding precision of the evaluations and the stage-2 mining (as "
                                          "--precision; autocast, as encode --dtype). Scores are fp32.",
                                  choices=RECIPE_PRECISIONS)
    threads: int | None = setting(None, "torch threads (none: torch's choice).", parse="positive_int")


@dataclass(frozen=True)
class RecipePaths:
    """Where one run's artifacts go; ``name`` is the working folder's name."""

    out: Path
    name: str
    index_root: Path
    runs_root: Path
    report_dir: Path


@dataclass
class LayoutSettings:
    """layout"""

    output: str = setting("encoders/recipe-scifact", "Working folder of checkpoints; its name NAME also names "
                                                     "indexes/NAME/, runs/NAME/ and eval/NAME/.")
    index_root: str = setting("indexes", "Indexes go to INDEX_ROOT/NAME/<model>.")
    runs_root: str = setting("runs", "TREC runs go to RUNS_ROOT/NAME/.")
    report_root: str = setting("eval", "The report goes to REPORT_ROOT/NAME/.")

    def paths(self) -> RecipePaths:
        out = Path(self.output)
        return RecipePaths(out, out.name, Path(self.index_root) / out.name, Path(self.runs_root) / out.name,
                           Path(self.report_root) / out.name)


@dataclass
class RecipeConfig:
    """Defaults are the documented CPU recipe (stages 1+2 with and without pre-training, an estimated 55-80 min on 2
    AVX512-BF16 cores); what each was chosen on is ``report.CHOSEN_ON``. Pre-training runs 240 steps at 1e-4 (on
    the dev split it beat no pre-training at stages 1 and 1+2, where the earlier 80 steps at 2e-5 only
    tied it at stage 1); the fresh MLM head has its own lr (1e-3); each part of the score is also trained alone (part
    loss 1); fine-tuning uses 7 BM25 (stage 1) or mined (stage 2) negatives per query (group 8), one
    epoch in stage 1 and two in stage 2 at lr 1.5e-4, starting with the sparse part scaled to its best
    in-batch loss (without it the bag-of-words starts ~10x too large); no dropout; bf16 where the CPU
    has native bf16 instructions (``auto``)."""

    data: DataSettings = field(default_factory=DataSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    plan: StageSettings = field(default_factory=StageSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    layout: LayoutSettings = field(default_factory=LayoutSettings)

    @classmethod
    def parts(cls) -> dict[str, type]:
        """Each part's attribute name and dataclass."""
        return {f.name: f.default_factory for f in dataclasses.fields(cls)}

    @classmethod
    def settings(cls) -> dict[str, tuple[str, dataclasses.Field]]:
        """Every setting's name -> (its part's attribute name, its field)."""
        return {f.name: (part, f) for part, kind in cls.parts().items() for f in dataclasses.fields(kind)}

    @classmethod
    def of(cls, **settings) -> RecipeConfig:
        """A config from settings by name (``RecipeConfig.of(pretrain_steps=2, seed=1)``); the others default."""
        return cls().replace(**settings)

    @classmethod
    def quick(cls, **settings) -> RecipeConfig:
        """The shortened form (``--quick``): stage 1 only, with the ablation (stage 1 without
        pre-training), so the table still has every system the comparison needs."""
        return cls.of(**{"stages": (1,), **settings})

    def replace(self, **settings) -> RecipeConfig:
        """A copy with these settings (by name) changed."""
        known = self.settings()
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise TypeError(f"RecipeConfig has no setting {unknown[0]!r}; settings: {', '.join(known)}")
        changes: dict[str, dict] = {}
        for name, value in settings.items():
            changes.setdefault(known[name][0], {})[name] = value
        return dataclasses.replace(self, **{part: dataclasses.replace(getattr(self, part), **kw)
                                            for part, kw in changes.items()})

    def flat(self) -> dict:
        """Every setting by its name (``results.json``'s ``config``)."""
        return {name: getattr(getattr(self, part), name) for name, (part, _) in self.settings().items()}

    def stage_epochs(self, stage: int) -> float:
        """The epochs a fine-tuning stage trains: stage 2 has its own count unless ``stage2_epochs`` is None."""
        s2 = self.plan.stage2_epochs
        return self.finetune.epochs if stage == 1 or s2 is None else s2
