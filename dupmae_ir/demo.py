"""The main job on the embedded default: ``python -m dupmae_ir.demo`` (README main command,
``bash run.sh demo``).

Runs the CPU recipe of :mod:`dupmae_ir.recipe` on the bundled SciFact -- BM25, the zero-shot backbone
(mean pooling), their fusion, DupMAE pre-training, fine-tuning stages 1-2 with and without
pre-training, evaluation through the indexes -- and prints one results table (``eval/demo/report.md``;
checkpoints in ``encoders/demo``, indexes in ``indexes/demo``, runs in ``runs/demo``).
``--quick`` runs the shortened form (stage 1 only, ``encoders/demo-quick``). Every other flag of
``python -m dupmae_ir.recipe`` is accepted.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .recipe.__main__ import main as recipe_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--output" not in argv:  # the demo's own folder: a re-run replaces the previous demo's files
        argv = [*argv, "--output", "encoders/demo-quick" if "--quick" in argv else "encoders/demo", "--overwrite"]
    return recipe_main(argv)


if __name__ == "__main__":
    from .errors import run_command

    sys.exit(run_command(main))
