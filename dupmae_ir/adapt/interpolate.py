"""Weight interpolation toward the starting checkpoint (WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning
of zero-shot models"): ``theta = (1 - alpha) * theta_start + alpha * theta_finetuned``, tensor by tensor, so
alpha = 1 gives the fine-tuned weights and alpha = 0 the start's, both bit for bit. Weights are read and
written as safetensors only; the fine-tuned checkpoint's config, tokenizer and ``dupmae_config.json`` are
copied (the representation settings the fine-tuning wrote stay with the weights)."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UserError
from ..outputs import OutputKind

INTERPOLATION_META = "dupmae_interpolation.json"
ADAPTED_OUTPUT = OutputKind("interpolated checkpoint", INTERPOLATION_META, ("dupmae_ir.adapt.interpolate",))
WEIGHT_FILES = ("model.safetensors", "dupmae_projection.safetensors")
SKIPPED = ("checkpoints", "negatives.tsv", "dupmae_finetune.json", ".dupmae-output.json")  # training's, not the model's


def mix(start, finetuned, alpha: float):
    """``(1 - alpha) * start + alpha * finetuned`` in fp32, back in the fine-tuned tensor's dtype; a
    non-float tensor (an index buffer) is the fine-tuned one."""
    if not finetuned.is_floating_point():
        return finetuned
    mixed = (1.0 - alpha) * start.float() + alpha * finetuned.float()  # same shape as both
    return mixed.to(finetuned.dtype).contiguous()


def interpolate_checkpoints(start: str | Path, finetuned: str | Path, alpha: float, out: Path) -> dict:
    """Write the interpolated checkpoint of ``start`` and ``finetuned`` into the (fresh) folder ``out``;
    returns ``{file: tensors}``. The two must hold the same tensors (names and shapes) in each weight file."""
    from safetensors.torch import load_file, save_file

    start, finetuned = Path(start), Path(finetuned)
    if not 0.0 <= alpha <= 1.0:
        raise UserError("--interpolate", f"{alpha} is outside [0, 1]", "pass a weight between 0 (start) and 1")
    counts = {}
    for name in WEIGHT_FILES:
        if not (finetuned / name).is_file():
            continue
        if not (start / name).is_file():
            raise UserError(start / name, f"missing: the fine-tuned checkpoint has {name}",
                            "interpolate checkpoints of the same architecture")
        a, b = load_file(str(start / name)), load_file(str(finetuned / name))
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in b):
            odd = sorted(set(a) ^ set(b)) or [k for k in sorted(b) if a[k].shape != b[k].shape]
            raise UserError(start / name, f"holds other tensors than {finetuned / name} (e.g. {odd[:2]})",
                            "interpolate a fine-tuned checkpoint with the checkpoint it started from")
        save_file({k: mix(a[k], b[k], alpha) for k in b}, str(out / name), metadata={"format": "pt"})
        counts[name] = len(b)
    if "model.safetensors" not in counts:
        raise UserError(finetuned, "has no model.safetensors", "pass a checkpoint saved with safetensors")
    for item in finetuned.iterdir():
        if item.name in counts or item.name in SKIPPED or item.name.startswith("."):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
    return counts
