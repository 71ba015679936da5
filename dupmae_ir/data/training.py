"""Fine-tuning data: training examples, the negatives and teacher-score files, and the grouped
dataset and collator the trainer reads (one query, one positive, ``group_size - 1`` negatives)."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from .readers import iter_lines
from .types import DataError, doc_text


@dataclass
class TrainExample:
    """One training query: its judged positives, its negative pool and (stage 3) teacher scores."""

    qid: str
    query: str
    positives: list[str]
    negatives: list[str]
    teacher: dict[str, float] | None = None


def read_negatives_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{qid: [docid, ...]}`` in file order from a TREC run (6 columns) or ``qid<TAB>docid`` lines."""
    out: dict[str, list[str]] = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if len(parts) == 6:
            qid, docid = parts[0], parts[2]
        elif len(parts) in (2, 3):
            qid, docid = parts[0], parts[1]
        else:
            raise DataError(f"{path}:{lineno}", f"expected a TREC run line 'qid Q0 docid rank score tag' or "
                                                f"'qid<TAB>docid', found {len(parts)} fields", "one negative per line")
        out.setdefault(qid, []).append(docid)
    return out


def read_teacher_scores(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` from lines ``qid docid score`` or a TREC run (score in column 5)."""
    out: dict[str, dict[str, float]] = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if len(parts) == 3:
            qid, docid, score = parts
        elif len(parts) == 6:
            qid, docid, score = parts[0], parts[2], parts[4]
        else:
            raise DataError(f"{path}:{lineno}",
                            f"expected 'qid docid score' or a TREC run line, found {len(parts)} fields",
                            "one teacher score per line")
        try:
            out.setdefault(qid, {})[docid] = float(score)
        except ValueError:
            raise DataError(f"{path}:{lineno}", f"score {score!r} is not a number", "write scores as numbers") from None
    return out


def write_negatives(path: Path, negatives: dict[str, list[str]]) -> None:
    from ..provenance import atomic_write_text

    atomic_write_text(path, "".join(f"{q}\t{d}\n" for q, docs in negatives.items() for d in docs))


def load_documents(corpus, doc_ids: set[str] | None = None, progress: bool = True) -> dict[str, str]:
    """``{docid: doc_text}`` of the documents in ``doc_ids`` (all when None), streamed once."""
    from tqdm import tqdm

    docs = {}
    for doc in tqdm(corpus.iter_docs(), desc="read corpus", unit="doc", disable=not progress, mininterval=2):
        if doc_ids is None or doc.id in doc_ids:
            docs[doc.id] = doc_text(doc)
    return docs


class GroupDataset:
    """Item i = query i with a group of ``group_size`` documents: one positive, then negatives sampled
    from its pool (without replacement while the pool lasts). The draw is a pure function of
    (seed, epoch, i), so a resumed run sees the same groups as an uninterrupted one."""

    def __init__(self, examples: list[TrainExample], docs: dict[str, str], group_size: int, seed: int = 42):
        self.examples = examples
        self.docs = docs
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0
        self._all_ids = sorted(docs)

    def __len__(self) -> int:
        return len(self.examples)

    def group(self, i: int) -> tuple[list[str], list[float] | None]:
        ex = self.examples[i]
        rng = random.Random(f"{self.seed}-{self.epoch}-{i}")
        pos = ex.positives[rng.randrange(len(ex.positives))]
        n = self.group_size - 1
        pool = ex.negatives
        if not pool and n:  # no negatives known: random corpus documents (not positives)
            pool = [d for d in rng.sample(self._all_ids, min(len(self._all_ids), n + len(ex.positives)))
                    if d not in ex.positives]
        negs = (rng.sample(pool, n) if len(pool) >= n
                else [pool[rng.randrange(len(pool))] for _ in range(n)] if pool else [])
        ids = [pos, *negs]
        teacher = [ex.teacher[d] for d in ids] if ex.teacher is not None else None
        return ids, teacher

    def __getitem__(self, i: int) -> dict:
        ids, teacher = self.group(i)
        item = {"query": self.examples[i].query, "docs": [self.docs[d] for d in ids]}
        if teacher is not None:
            item["teacher"] = teacher
        return item


class GroupCollator:
    """Tokenise a list of :class:`GroupDataset` items into query and document tensors."""

    def __init__(self, tokenizer, query_max_length: int, doc_max_length: int):
        self.tokenizer = tokenizer
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length

    def __call__(self, items: list[dict]) -> dict:
        import torch

        q = self.tokenizer([it["query"] for it in items], max_length=self.query_max_length, truncation=True,
                           padding=True, return_tensors="pt")
        d = self.tokenizer([t for it in items for t in it["docs"]], max_length=self.doc_max_length,
                           truncation=True, padding=True, return_tensors="pt")
        batch = {"query_input_ids": q["input_ids"], "query_attention_mask": q["attention_mask"],  # (B, Lq)
                 "doc_input_ids": d["input_ids"], "doc_attention_mask": d["attention_mask"]}  # (B*G, Ld)
        if "teacher" in items[0]:
            batch["teacher_scores"] = torch.tensor([it["teacher"] for it in items], dtype=torch.float32)  # (B, G)
        return batch
