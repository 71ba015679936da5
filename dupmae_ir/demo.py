"""The main job on the embedded default: ``python -m dupmae_ir.demo`` (README command a).

Placeholder until the recipe lands: loads the bundled SciFact and encodes a slice with the default
backbone.
"""
from __future__ import annotations

import itertools
import time


def main() -> None:
    from .data import doc_text, resolve
    from .encoder import DupMAEEncoder

    coll = resolve("default")
    docs = list(itertools.islice(coll.iter_docs(), 64))
    enc = DupMAEEncoder("default")
    t = time.time()
    out = enc.encode_docs([doc_text(d) for d in docs])
    print(f"encoded {len(docs)} SciFact docs in {time.time() - t:.1f}s: dense {out.dense.shape}, "
          f"mean {sum(map(len, out.impacts)) / len(docs):.0f} impact terms/doc")


if __name__ == "__main__":
    main()
