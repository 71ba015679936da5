"""The baseline a model must beat out of domain, beside it in ``python -m dupmae_ir.eval beir``
(``--baseline-backbone``): the untouched backbone zero-shot (mean pooling, exhaustive in-memory scoring
with :class:`~dupmae_ir.search.exact.ExactSearcher`, as ``bench/transfer.py`` and the label-free route's
teacher score it) and BM25 fused with it by stock normalised fusion (:func:`dupmae_ir.runs.fuse_normalize`,
``pyserini.fusion --method normalize``). The backbone's run is a TREC file whose provenance records what it
depends on (checkpoint and corpus fingerprints, lengths, precision), reused while those are the same."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..runs import Run, fuse_normalize, read_trec, write_trec

BACKBONE = "backbone"
BM25_BACKBONE = "bm25+backbone"
LABELS = {BACKBONE: "backbone zero-shot (mean pooling)", BM25_BACKBONE: "BM25 + backbone, normalised fusion"}
POOLING = "mean"  # the backbone is a sentence encoder trained with mean pooling


@dataclass(frozen=True)
class BackboneBaseline:
    """The backbone checkpoint (``default``: the bundled one), its fingerprint and the precision it runs in."""

    checkpoint: str
    fingerprint: dict
    dtype: str  # concrete: ``auto`` resolved on this host's device (recorded, it changes the numbers)

    @classmethod
    def load(cls, checkpoint: str) -> BackboneBaseline:
        from ..fingerprint import checkpoint_fingerprint
        from ..modeling.backbone import resolve_model_path
        from ..precision import default_device, resolve_dtype

        return cls(checkpoint, checkpoint_fingerprint(resolve_model_path(checkpoint)),
                   resolve_dtype("auto", str(default_device())))

    def depends_on(self, corpus: dict, lengths: tuple[int | None, int | None], split: str, hits: int,
                   drop_query_id: bool) -> dict:
        """What the backbone's run depends on (``lengths``: document and query pieces; None: the backbone's)."""
        return {"inputs": {"backbone": self.fingerprint, "corpus": corpus}, "pooling": POOLING, "dtype": self.dtype,
                "lengths": list(lengths), "split": split, "hits": hits, "drop_query_id": drop_query_id}

    def run(self, coll, queries: dict[str, str], path: Path, depends_on: dict, progress: bool = True) -> Run:
        """The backbone's run: read from ``path`` when its provenance records ``depends_on``, else scored
        exhaustively and written there. Read back from the file either way, so a first run and a rerun fuse
        the same (6-decimal) scores."""
        from ..outputs import sidecar_path

        try:
            recorded = json.loads(sidecar_path(path).read_text(encoding="utf-8")).get("depends_on")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded != depends_on or not path.is_file():
            hits, drop = depends_on["hits"], depends_on["drop_query_id"]
            run = self._score(coll, queries, hits + (1 if drop else 0), *depends_on["lengths"], progress)
            if drop:  # BEIR's convention on ArguAna and Quora, as the other systems
                run = {q: [h for h in v if h[0] != q][:hits] for q, v in run.items()}
            write_trec(path, run, BACKBONE, dict(system=BACKBONE, backbone=self.checkpoint, pooling=POOLING,
                                                  scoring="exhaustive, in memory", depends_on=depends_on),
                       overwrite=True)  # eval's own run
        return read_trec(path)

    def _score(self, coll, queries: dict[str, str], hits: int, doc_len: int | None, query_len: int | None,
               progress: bool) -> Run:
        from ..data import doc_text
        from ..modeling.model import DupMAEModel
        from ..search.exact import ExactSearcher

        model, tokenizer = DupMAEModel.from_pretrained(self.checkpoint)
        docs = {d.id: doc_text(d) for d in coll.iter_docs()}
        searcher = ExactSearcher(model, tokenizer, doc_len, query_len, need_sparse=False, pooling=POOLING,
                                 dtype=self.dtype).index(list(docs), list(docs.values()), progress=progress)
        return searcher.search(queries, k=hits, modes=("dense",))["dense"]


def fuse_with_bm25(bm25: Run, backbone: Run, hits: int) -> Run:
    """BM25 + backbone: each query's two runs fused as ``pyserini.fusion --method normalize`` does."""
    return {q: fuse_normalize([bm25.get(q, []), backbone.get(q, [])], hits) for q in dict.fromkeys([*bm25, *backbone])}
