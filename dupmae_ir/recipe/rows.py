"""The recipe's table as typed records: a :class:`Row` is found by its fields (model, stages, mode, split);
its label (``"DupMAE pre-trained + stage 1+2: hybrid (sum)"``) is for display and ``results.json`` only."""
from __future__ import annotations

from dataclasses import dataclass, field

MEASURES = ("nDCG@10", "R@100")
# the models of the table: three baselines and the two fine-tuned arms
MODELS = {"bm25": "BM25 (Pyserini, flat)", "zero-shot": "backbone zero-shot, mean pooling (dense)",
          "fusion": "BM25 + backbone(mean), normalised fusion", "pt": "DupMAE pre-trained", "nopt": "no pre-training"}
ARMS = ("pt", "nopt")  # fine-tuned from the DupMAE pre-trained model / from the backbone
# a fine-tuned model's searches: its dense, impact and hybrid runs, and a normalised fusion (a measurement)
MODES = {"dense": "dense", "impact": "impact", "hybrid": "hybrid (sum)", "fusion": "hybrid (normalised fusion)"}


def model_label(model: str, stages: tuple[int, ...] = ()) -> str:
    """``"DupMAE pre-trained + stage 1+2"``: how the report names a model."""
    return MODELS[model] + (f" + stage {'+'.join(map(str, stages))}" if stages else "")


@dataclass
class Row:
    """One system scored on one split: ``model`` (a key of :data:`MODELS`), the fine-tuning ``stages`` it
    went through and its search ``mode`` (a key of :data:`MODES`; both empty for a baseline)."""

    model: str
    stages: tuple[int, ...] = ()
    mode: str = ""
    split: str = "test"
    scores: dict[str, float] = field(default_factory=dict)  # MEASURES, rounded to 4 decimals
    per_query: dict[str, float] = field(default_factory=dict, repr=False)  # qid -> nDCG@10
    source: str = ""  # Lucene | in memory | fusion | index
    note: str = ""
    paired: dict | None = None  # the test against its pre-trained equal (a not-pre-trained row)

    @property
    def label(self) -> str:
        return model_label(self.model, self.stages) + (f": {MODES[self.mode]}" if self.mode else "")

    @property
    def ndcg(self) -> float:
        return self.scores["nDCG@10"]

    def add_note(self, text: str) -> None:
        self.note = "; ".join(x for x in (self.note, text) if x)

    def as_dict(self) -> dict:
        """The row of ``results.json`` and ``report.json``: its label as ``system``, its scores and fields."""
        out = {"system": self.label, **self.scores, "source": self.source, "note": self.note,
               "model": self.model, "stages": list(self.stages), "mode": self.mode}
        return out if self.paired is None else {**out, "paired": self.paired}

    @classmethod
    def from_dict(cls, d: dict, split: str = "test", per_query: dict[str, float] | None = None) -> Row:
        """A row of ``results.json`` back as a record."""
        return cls(d["model"], tuple(d["stages"]), d["mode"], split, {m: d[m] for m in MEASURES},
                   per_query or {}, d.get("source", ""), d.get("note", ""), d.get("paired"))


def find(rows: list[Row], **fields) -> Row | None:
    """The first row whose fields equal ``fields`` (e.g. ``model="pt", stages=(1, 2), mode="hybrid"``)."""
    return next((r for r in rows if all(getattr(r, k) == v for k, v in fields.items())), None)


def final_hybrid(rows: list[Row]) -> Row | None:
    """The headline row: the pre-trained arm's hybrid after its last stage (the last in the table)."""
    hybrids = [r for r in rows if r.model == "pt" and r.mode == "hybrid"]
    return hybrids[-1] if hybrids else None
