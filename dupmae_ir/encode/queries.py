"""Pre-encode queries for ``dupmae_ir.search`` and for stock Pyserini (:func:`encode_queries`)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..index import QUERIES_META as QUERIES_META_NAME
from ..index import QUERIES_OUTPUT, QUERY_IMPACTS, QUERY_PICKLE, QUERY_ROWS, QUERY_TOPICS, QUERY_VECTORS
from ..java import LUCENE_MAX_CLAUSES


def encode_queries(queries: dict[str, str], encoder, output_dir, batch_size: int = 64,
                   dtype: str = "fp32", device: str = "cpu", max_impact_terms: int | None = LUCENE_MAX_CLAUSES,
                   overwrite: bool = False, query_max_length: int | None = None) -> Path:
    """Pre-encode queries; returns ``output_dir``. Files:

    - ``dense/embedding.npy`` (Q, d) float32 + ``dense/queries.jsonl`` (``{"id", "text"}`` per row):
      what :mod:`dupmae_ir.search` reads (``--encoded-queries output_dir``);
    - ``dense/embedding.pkl``: the same rows as a pandas DataFrame (``id``, ``text``, ``embedding``),
      for stock Pyserini's ``--encoded-queries output_dir/dense`` only: a pickle runs code when loaded,
      so the toolkit writes it but never reads it;
    - ``impact.jsonl``: ``{"id", "contents": query text, "vector": {token: int}}`` keyed by text, for
      the impact ``--encoder output_dir/impact.jsonl``;
    - ``topics.tsv``: ``qid<TAB>text`` for ``--topics``; ``dupmae_queries.json``: provenance, with the
      encoder's fingerprint (searching them on another checkpoint's index is refused unless asked).
    Weights use ``query_topk`` and ``query_scale`` of the encoder's ``RepresentationConfig``. Stock
    Pyserini searches with Lucene's default limit of 1,024 query terms (``TooManyClauses`` beyond), so
    the ``.jsonl`` keeps each query's ``max_impact_terms`` largest weights (None: all); the number of
    queries cut is recorded in ``dupmae_queries.json``. ``dupmae_ir.search`` raises the limit instead.
    """
    import numpy as np
    import pandas as pd

    from ..data import check_id
    from ..fingerprint import checkpoint_fingerprint
    from ..inference import DupMAEEncoder
    from ..modeling.backbone import resolve_model_path
    from ..outputs import atomic_output_dir, check_output_dir
    from ..provenance import provenance, write_json

    check_output_dir(output_dir, QUERIES_OUTPUT, overwrite)  # before the model loads
    for qid in queries:
        check_id(qid, "queries", "query id")
    enc = encoder if isinstance(encoder, DupMAEEncoder) else DupMAEEncoder(str(encoder), device=device, dtype=dtype)
    enc = enc.with_lengths(query_max_length=query_max_length)
    qids = list(queries)
    texts = [queries[q] for q in qids]
    out = enc.encode_queries(texts, batch_size=batch_size)  # dense (Q, d), impacts [{tok: int}]
    cut = 0
    if max_impact_terms:
        for i, vector in enumerate(out.impacts):
            if len(vector) > max_impact_terms:
                cut += 1
                keep = sorted(vector.items(), key=lambda kv: (-kv[1], kv[0]))[:max_impact_terms]
                kept = {token for token, _ in keep}
                out.impacts[i] = {t: w for t, w in vector.items() if t in kept}  # vocabulary order kept
    rows = []  # (qid, key text, dense, vector); Pyserini looks queries up by their (stripped) text
    for i, (qid, text) in enumerate(zip(qids, texts)):
        rows.append((qid, text, out.dense[i], out.impacts[i]))
        clean = " ".join(text.split())  # the form written to topics.tsv (no tabs or newlines)
        if clean != text.strip():
            rows.append((qid, clean, out.dense[i], out.impacts[i]))
    with atomic_output_dir(output_dir, QUERIES_OUTPUT, overwrite) as tmp:
        (tmp / "dense").mkdir()
        vectors = np.stack([r[2] for r in rows]).astype(np.float32) if rows else np.zeros((0, enc.model.dense_dim),
                                                                                           np.float32)
        with open(tmp / QUERY_VECTORS, "wb") as fh:
            np.save(fh, vectors, allow_pickle=False)
        with open(tmp / QUERY_ROWS, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"id": r[0], "text": r[1]}, ensure_ascii=False) + "\n" for r in rows)
        frame = pd.DataFrame({"id": [r[0] for r in rows], "text": [r[1] for r in rows],
                              "embedding": [r[2] for r in rows]})
        frame.to_pickle(tmp / QUERY_PICKLE)  # for stock Pyserini; never read by the toolkit
        with open(tmp / QUERY_IMPACTS, "w", encoding="utf-8") as f:
            for qid, text, _, vector in rows:
                f.write(json.dumps({"id": qid, "contents": text, "vector": vector}, ensure_ascii=False) + "\n")
        with open(tmp / QUERY_TOPICS, "w", encoding="utf-8") as f:
            for qid, text in zip(qids, texts):
                f.write(f"{qid}\t{' '.join(text.split())}\n")
        write_json(tmp / QUERIES_META_NAME, provenance(
            kind="dupmae_queries", encoder=enc.model_name_or_path, retriever=asdict(enc.config),
            encoder_fingerprint=checkpoint_fingerprint(resolve_model_path(enc.model_name_or_path)),
            query_scale=enc.config.query_scale, query_topk=enc.config.query_topk, queries=len(qids),
            max_impact_terms=max_impact_terms, queries_cut_to_max_impact_terms=cut, dtype=enc.dtype_name,
            files={"dense": QUERY_VECTORS, "dense_rows": QUERY_ROWS, "dense_pyserini": QUERY_PICKLE,
                   "impact": QUERY_IMPACTS, "topics": QUERY_TOPICS}))
    return Path(output_dir)
