"""Fingerprints of what a reused artifact depends on: a checkpoint, a corpus, a command's settings.

A resumable encode (``state.json`` of its work folder), an index reused by ``eval``, ``eval``'s result
files and pre-encoded queries record them; a reuse goes ahead only when the recorded and the current
fingerprints are equal, and :func:`changes` says in a few words what differs.

Cheap by design, and by content, never by name or time:

- a checkpoint folder: its config and tokenizer files hashed whole; each ``.safetensors`` file by its
  size, its header and the first and last 4 KiB of every tensor (two checkpoints of one architecture
  have the same header and size, so those alone cannot tell them apart; training moves every tensor);
- a corpus: each file hashed whole, streamed (size and mtime would miss a file regenerated at the same
  size); an ir_datasets collection by its id (ir_datasets checks its own downloads). A resumable encode
  also records each finished chunk's documents (:func:`texts_digest`), so that a resume checks exactly
  the documents it keeps (a fixed malformed line past them does not void them).
"""
from __future__ import annotations

import hashlib
import json
import os
from fnmatch import fnmatch
from pathlib import Path

BLOCK = 1 << 20
SAMPLE = 4096  # bytes hashed at each end of every tensor
MAX_HEADER = 100 << 20  # a safetensors header larger than this is not one (it is hashed as plain bytes)
INPUT_WORDS = {"encoder": "checkpoint", "corpus": "corpus"}  # the parts of a record's "inputs", in words
# the files that decide what a checkpoint computes; training state, logs and results beside them are not
MODEL_FILES = ("*.safetensors", "*.safetensors.index.json", "*config.json", "tokenizer*.json",
               "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model")


def _hasher():
    return hashlib.blake2b(digest_size=16)


def file_digest(path: str | os.PathLike) -> str:
    """blake2b-128 of a whole file, read in 1 MiB blocks."""
    h = _hasher()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _spans(header: bytes) -> list[tuple[int, int]] | None:
    """The tensors' ``(start, end)`` byte offsets in a safetensors data section, or None if unreadable."""
    try:
        entries = json.loads(header)
        return sorted((int(v["data_offsets"][0]), int(v["data_offsets"][1]))
                      for k, v in entries.items() if k != "__metadata__")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def safetensors_digest(path: str | os.PathLike) -> str:
    """blake2b-128 of a ``.safetensors`` file's size, header and both ends of every tensor; a file whose
    header does not parse is sampled at 64 evenly spaced places instead."""
    size = os.path.getsize(path)
    h = _hasher()
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        head = fh.read(8)
        h.update(head)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        header = fh.read(n) if 0 < n <= min(size - 8, MAX_HEADER) else b""
        h.update(header)
        base = 8 + len(header)
        spans = _spans(header) if header else None
        if spans is None:
            step = max(1, (size - base) // 64)
            spans = [(o, min(o + SAMPLE, size - base)) for o in range(0, max(size - base, 0), step)]
        for start, end in spans:
            for offset in sorted({start, max(start, end - SAMPLE)}):
                fh.seek(base + offset)
                h.update(fh.read(max(0, min(SAMPLE, end - offset))))
    return h.hexdigest()


def checkpoint_fingerprint(path: str | os.PathLike) -> dict:
    """``{"files": {name: {"bytes", "digest"}}}`` of a checkpoint folder (as returned by
    ``resolve_model_path``); a hub id is looked up in the local Hugging Face cache, else known by its
    name alone (``{"name": id}``)."""
    folder = Path(path)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(path), local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the cache, or not a hub id: the name is all there is
            return {"name": str(path)}
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and any(fnmatch(p.name, pattern) for pattern in MODEL_FILES):
            digest = safetensors_digest(p) if p.name.endswith(".safetensors") else file_digest(p)
            files[p.name] = {"bytes": p.stat().st_size, "digest": digest}
    return {"files": files}


def corpus_fingerprint(collection) -> dict:
    """``{"files": {name: {"bytes", "digest"}}}`` of a collection's corpus files (a
    :class:`dupmae_ir.data.Collection`), or ``{"ir_datasets": id}``."""
    if collection.kind == "ir_datasets":
        return {"ir_datasets": collection.ir_id}
    return {"files": {p.name: {"bytes": p.stat().st_size, "digest": file_digest(p)}
                      for p in collection.corpus_files()}}


def texts_digest(texts) -> str:
    """blake2b-128 of a sequence of strings (each one's length is hashed too, so no two sequences
    collide by moving text across a boundary): a chunk of documents' ids and texts."""
    h = _hasher()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def fingerprint_id(data) -> str:
    """A short stable name of any JSON-able fingerprint (16 hex digits)."""
    h = _hasher()
    h.update(json.dumps(data, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _files_change(what: str, old, new) -> str:
    """``the corpus changed (corpus.jsonl: 1,204 -> 1,310 bytes)``, for two file fingerprints."""
    if not isinstance(old, dict) or not isinstance(new, dict) or "files" not in old or "files" not in new:
        return f"the {what} is another one ({_short(old)} recorded, {_short(new)} now)"
    a, b = old["files"], new["files"]
    parts = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            parts.append(f"{name} {'added' if name in b else 'gone'}")
        elif a[name] != b[name]:
            sizes = (f"{a[name].get('bytes', 0):,} -> {b[name].get('bytes', 0):,} bytes"
                     if a[name].get("bytes") != b[name].get("bytes") else "same size, other content")
            parts.append(f"{name}: {sizes}")
    return f"the {what} changed ({'; '.join(parts[:3])}{'; ...' if len(parts) > 3 else ''})"


def changes(recorded: dict, current: dict) -> list[str]:
    """What differs between two records (settings with an ``inputs`` part of fingerprints), in words:
    ``["the checkpoint changed (model.safetensors: same size, other content)", "batch_size 16 -> 32"]``."""
    out = []
    for key in sorted(set(recorded) | set(current), key=lambda k: (k != "inputs", k)):
        old, new = recorded.get(key), current.get(key)
        if old == new:
            continue
        if key == "inputs" and isinstance(old, dict) and isinstance(new, dict):
            out += [_files_change(INPUT_WORDS.get(k, k), old.get(k), new.get(k))
                    for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        elif old is None:
            out.append(f"{key} not recorded")
        else:
            out.append(f"{key} {_short(old)} -> {_short(new)}")
    return out

