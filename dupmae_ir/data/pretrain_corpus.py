"""Pre-training text, tokenised once and cached on disk, read back memory-mapped.

Any collection of the data layer (:func:`dupmae_ir.data.resolve`: the bundled default, a BEIR folder,
a JSONL collection, ``msmarco-passage``) is streamed document by document (:func:`doc_text`), tokenised
in batches with the fast tokenizer (no specials) and appended to a flat ``ids.bin`` (uint16 when the
vocabulary fits, else int32) with an ``offsets.npy`` index, so MS MARCO's 8.8M passages never have to
fit in memory. Two layouts:

- ``truncate`` (default): one example per document, cut to ``max_seq_length - 2`` pieces;
- ``pack``: documents concatenated and cut into chunks of exactly ``max_seq_length - 2`` pieces
  (the RetroMAE practice for long text such as Wikipedia).

Several collections joined by ``+`` (``default+beir/nfcorpus``: SciFact plus a target collection's
documents) are each tokenised and cached on their own and read one after the other
(:class:`MixedCorpus`).

The cache folder name is a hash of (collection, its files' sizes and times, tokenizer vocabulary,
max_seq_length, layout); ``meta.json`` beside the arrays records them. It is written under a
temporary name and renamed when complete, so an interrupted build is never read.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .resolve import resolve
from .types import DataError, doc_text

LAYOUTS = ("truncate", "pack")
DEFAULT_CACHE = Path(os.environ.get("DUPMAE_CACHE", Path.home() / ".cache" / "dupmae_ir")) / "pretrain"


def _collection_fingerprint(collection) -> dict:
    files = [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime": int(p.stat().st_mtime)}
             for p in collection.corpus_files()]
    return {"name": collection.name, "kind": collection.kind, "ir_id": collection.ir_id, "files": files}


def _vocab_hash(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha1("\n".join(t for t, _ in vocab).encode()).hexdigest()[:16]


@dataclass
class TokenizedCorpus:
    """A map-style dataset over a cache folder: item i = ``{"input_ids": (n,) int64, "index": i}``."""

    folder: Path

    def __post_init__(self):
        self.folder = Path(self.folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        dtype = np.dtype(self.meta["dtype"])
        self.offsets = np.load(self.folder / "offsets.npy", mmap_mode="r")  # (N+1,) int64
        size = int(self.offsets[-1])
        self.ids = np.memmap(self.folder / "ids.bin", dtype=dtype, mode="r", shape=(max(size, 1),))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> dict:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return {"input_ids": np.asarray(self.ids[start:end], dtype=np.int64), "index": int(i)}

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def folders(self) -> list[Path]:
        return [self.folder]


@dataclass
class MixedCorpus:
    """Tokenised corpora one after the other: item i is the whole's i-th example, its ``index`` i (the
    collator keys each example's masks on it, so no two parts share their draws)."""

    parts: list[TokenizedCorpus]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        j = i
        for part in self.parts:
            if j < len(part):
                return {**part[j], "index": int(i)}
            j -= len(part)
        raise IndexError(i)

    @property
    def num_tokens(self) -> int:
        return sum(p.num_tokens for p in self.parts)

    @property
    def folders(self) -> list[Path]:
        return [p.folder for p in self.parts]


def corpus_parts(corpus: str) -> list[str]:
    """The collections a pre-training ``corpus`` names: one, or several joined by ``+``
    (``default+beir/nfcorpus``); an existing path whose name holds a ``+`` is one collection."""
    if "+" not in corpus or Path(corpus).exists():
        return [corpus]
    parts = corpus.split("+")
    if not all(p.strip() for p in parts):
        raise DataError(corpus, "an empty collection name around '+'", "join collections as NAME+NAME")
    return [p.strip() for p in parts]


def build_pretraining_corpus(corpus: str, tokenizer, max_seq_length: int = 128, layout: str = "truncate",
                             cache_dir: str | Path | None = None, data_dir: str | Path | None = None,
                             max_docs: int | None = None) -> TokenizedCorpus | MixedCorpus:
    """:func:`build_tokenized_corpus` of each collection of ``corpus`` (:func:`corpus_parts`; ``max_docs``
    per collection); several give a :class:`MixedCorpus`."""
    parts = [build_tokenized_corpus(c, tokenizer, max_seq_length, layout, cache_dir, data_dir, max_docs)
             for c in corpus_parts(corpus)]
    return parts[0] if len(parts) == 1 else MixedCorpus(parts)


def build_tokenized_corpus(corpus: str, tokenizer, max_seq_length: int = 128, layout: str = "truncate",
                           cache_dir: str | Path | None = None, data_dir: str | Path | None = None,
                           max_docs: int | None = None, batch_docs: int = 1000) -> TokenizedCorpus:
    """Tokenise ``corpus`` once (or reuse the cache) and return the dataset over it.

    ``max_docs`` keeps only the first documents (smoke runs); it is part of the cache key.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; valid: {LAYOUTS}")
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length={max_seq_length}: needs room for [CLS], one token and [SEP]")
    collection = resolve(corpus, data_dir=data_dir)
    if not collection.has_corpus():
        raise DataError(corpus, "this collection has no documents to pre-train on", "pass a collection with a corpus")
    key = {"collection": _collection_fingerprint(collection), "vocab": _vocab_hash(tokenizer),
           "max_seq_length": max_seq_length, "layout": layout, "max_docs": max_docs, "format": 1}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    folder = root / f"{Path(str(collection.name)).name}-{layout}{max_seq_length}-{digest}"
    if (folder / "meta.json").is_file():
        return TokenizedCorpus(folder)
    _build(collection, tokenizer, max_seq_length, layout, folder, key, max_docs, batch_docs)
    return TokenizedCorpus(folder)


def _build(collection, tokenizer, max_seq_length, layout, folder, key, max_docs, batch_docs):
    import shutil

    from tqdm.auto import tqdm

    from ..provenance import provenance

    body = max_seq_length - 2
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    offsets = [0]
    carry: list[int] = []  # pack layout: pieces not yet filling a chunk
    docs = skipped = 0
    try:
        with open(tmp / "ids.bin", "wb") as out:
            def flush(texts):
                nonlocal skipped
                enc = tokenizer(texts, add_special_tokens=False, truncation=layout == "truncate",
                                max_length=body if layout == "truncate" else None)["input_ids"]
                for ids in enc:
                    if not ids:
                        skipped += 1
                        continue
                    if layout == "truncate":
                        out.write(np.asarray(ids, dtype=dtype).tobytes())
                        offsets.append(offsets[-1] + len(ids))
                    else:
                        carry.extend(ids)
                        while len(carry) >= body:
                            out.write(np.asarray(carry[:body], dtype=dtype).tobytes())
                            offsets.append(offsets[-1] + body)
                            del carry[:body]

            texts = []
            total = max_docs or collection.doc_count()
            for doc in tqdm(collection.iter_docs(empty="skip"), total=total, desc=f"tokenise {collection.name}",
                            unit="doc", mininterval=2.0):
                texts.append(doc_text(doc))
                docs += 1
                if len(texts) >= batch_docs:
                    flush(texts)
                    texts = []
                if max_docs and docs >= max_docs:
                    break
            if texts:
                flush(texts)
            if carry:  # the last, shorter chunk of the pack layout
                out.write(np.asarray(carry, dtype=dtype).tobytes())
                offsets.append(offsets[-1] + len(carry))
        if len(offsets) == 1:
            raise DataError(collection.name, "no non-empty documents to pre-train on", "pass a collection with text")
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        meta = provenance(kind="dupmae_ir.pretrain_corpus", dtype=np.dtype(dtype).name, examples=len(offsets) - 1,
                          tokens=offsets[-1], documents=docs, skipped_empty=skipped, **key)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        if folder.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.replace(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
