"""Pseudo-queries from the target corpus, without labels: a seeded sample of documents, each asking for
itself with its title (or, without one, its first sentence) cut to a few words; the source document is
the query's one positive. Written as a BEIR training folder (``queries.jsonl`` + ``qrels/train.tsv``) that
fine-tuning reads with ``--train FOLDER --corpus TARGET`` (:func:`write_training_folder`)."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..data.types import Doc
from ..outputs import OutputKind

PSEUDO_META = "dupmae_pseudo_queries.json"
PSEUDO_OUTPUT = OutputKind("folder of pseudo-queries", PSEUDO_META, ("dupmae_ir.adapt.pseudo_queries",))
SPLIT = "train"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"'])")  # a stop, space, then a capital or digit


@dataclass(frozen=True)
class PseudoQuery:
    """One pseudo-query: its text, the document it came from and which part of it (``title`` | ``sentence``)."""

    qid: str
    text: str
    doc_id: str
    source: str


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (whitespace collapsed); the whole text without one."""
    text = " ".join(text.split())
    return _SENTENCE_END.split(text, 1)[0] if text else ""


def pseudo_query_text(doc: Doc, max_words: int) -> tuple[str, str] | None:
    """``(text, source)``: the title when the document has one, else its first sentence, cut to
    ``max_words`` words; None when the document has neither."""
    title = " ".join(doc.title.split())
    text, source = (title, "title") if title else (first_sentence(doc.text), "sentence")
    words = text.split()[:max_words]
    return (" ".join(words), source) if words else None


def sample_pseudo_queries(docs: Iterable[Doc], n: int, seed: int, max_words: int) -> list[PseudoQuery]:
    """``n`` documents drawn with ``random.Random(seed)`` from those that give a query (all of them when
    fewer), in corpus order, as :class:`PseudoQuery` ``pq0 pq1 ...``."""
    candidates = [(d.id, made) for d in docs if (made := pseudo_query_text(d, max_words)) is not None]
    picked = sorted(random.Random(seed).sample(range(len(candidates)), min(n, len(candidates))))
    return [PseudoQuery(f"pq{i}", candidates[j][1][0], candidates[j][0], candidates[j][1][1])
            for i, j in enumerate(picked)]


def write_training_folder(folder: Path, queries: list[PseudoQuery], info: dict) -> None:
    """``folder`` (a fresh temporary folder) as a BEIR training split: ``queries.jsonl``, ``qrels/train.tsv``
    (each query's source document, relevance 1) and ``dupmae_pseudo_queries.json`` (``info``, the sources)."""
    from ..provenance import provenance, write_json

    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q.qid, "text": q.text}, ensure_ascii=False) + "\n" for q in queries),
        encoding="utf-8")
    (folder / "qrels").mkdir()
    (folder / "qrels" / f"{SPLIT}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q.qid}\t{q.doc_id}\t1\n" for q in queries), encoding="utf-8")
    sources = {s: sum(q.source == s for q in queries) for s in ("title", "sentence")}
    write_json(folder / PSEUDO_META, provenance(kind=PSEUDO_OUTPUT.kinds[0], queries=len(queries), sources=sources,
                                                **info))


def read_pseudo_queries(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``({qid: text}, {qid: source doc id})`` of a folder written by :func:`write_training_folder`."""
    from ..data import resolve

    coll = resolve(folder)
    qrels = coll.qrels(SPLIT)
    return coll.queries(SPLIT), {q: next(iter(docs)) for q, docs in qrels.items()}
