"""Run under ``torchrun`` by tests/test_pretrain_train.py: pre-train, then every rank writes a
checksum of its own weights to ``<output_dir>/rank<r>.json`` so the test can compare ranks."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

from dupmae_ir.train.arguments import PretrainArguments
from dupmae_ir.train.pretraining import run_pretraining


class WeightChecksum(TrainerCallback):
    def __init__(self, folder: Path):
        self.folder = folder

    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest = hashlib.sha256()
        for name, p in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        rank = int(os.environ.get("RANK", "0"))
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "world_size": args.world_size, "step": state.global_step, "sha256": digest.hexdigest()}))


if __name__ == "__main__":
    checkpoint, corpus, output_dir, cache_dir = sys.argv[1:5]
    args = PretrainArguments(model_name_or_path=checkpoint, corpus=corpus, max_docs=32, max_seq_length=32,
                             batch_size=4, max_steps=3, save_steps=100, logging_steps=1, output_dir=output_dir,
                             cache_dir=cache_dir, disable_tqdm=True)
    run_pretraining(args, callbacks=[WeightChecksum(Path(output_dir) / "ranks")])
