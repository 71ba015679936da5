"""Prepare the data folder ``.gpu/`` (git-ignored) that the GPU check carries to the device machine.

    python bench/gpu_check/prep.py [--out .gpu]

The lent machine has torch and transformers but no Java, Pyserini or the default-backbone package,
and it takes at most 64 MiB of files. So this writes, here:
- ``backbone16/``: the default backbone (MiniLM-L6) with its weights rounded to fp16 (45 MB instead
  of 91 MB; ``check.sh`` turns them back into an fp32 checkpoint there, and every model of the
  check starts from it);
- ``bm25-negatives.tsv``: stage-1 negatives, BM25 top 50 of each SciFact train query with its
  judged positives removed (exactly what the recipe's stage 1 mines with Pyserini).
Add ``/.gpu/`` to ``.git/info/exclude`` and name ``.gpu`` in the device tool's ``carry``.
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / ".gpu"))
    args = ap.parse_args()
    from safetensors.torch import load_file, save_file

    from dupmae_ir.bm25 import bm25_search, build_bm25_index
    from dupmae_ir.data import resolve
    from dupmae_ir.modeling.backbone import resolve_model_path
    from dupmae_ir.train.finetune import write_negatives
    from dupmae_ir.train.mining import negatives_from_run

    out = Path(args.out)
    src = Path(resolve_model_path("default"))
    dst = out / "backbone16"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, dst / name)
    weights = load_file(src / "model.safetensors")
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
              dst / "model.safetensors", metadata={"format": "pt"})
    coll = resolve("default")
    queries, qrels = coll.queries("train"), coll.qrels("train")
    queries = {q: t for q, t in queries.items() if any(r > 0 for r in qrels.get(q, {}).values())}
    with tempfile.TemporaryDirectory() as tmp:
        index = build_bm25_index(coll, Path(tmp) / "bm25", progress=False)
        run = bm25_search(index, queries, hits=55, progress=False)  # the recipe's depth + skip + 5
    write_negatives(out / "bm25-negatives.tsv", negatives_from_run(run, qrels, 50))
    print(f"wrote {dst} and {out / 'bm25-negatives.tsv'}")


if __name__ == "__main__":
    main()
