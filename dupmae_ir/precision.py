"""Compute precision of encoding, training and evaluation, and the default device.

- ``fp32``: exact reference;
- ``bf16`` / ``fp16``: autocast (fp16 only on GPUs);
- ``int8``: dynamic int8 quantisation of every linear layer (encoder and the vocabulary head), CPU
  only; it costs quality, so it is opt-in and never chosen by ``auto`` (docs/performance.md);
- ``int8-head``: dynamic int8 quantisation of the MLM head only (the half of the FLOPs that only the
  bag-of-words needs), CPU only: the dense vectors stay the fp32 ones bit for bit. Opt-in;
- ``auto``: a pure function of the hardware, so the same command on the same machine always picks the
  same dtype (:func:`cpu_has_fast_bf16`): bf16 on GPUs that support it (fp16 on older ones); on CPUs
  bf16 where the cores have native bf16 instructions (AVX512-BF16 or AMX, as torch or
  ``/proc/cpuinfo`` report them), else fp32 (AVX2-only cores run bf16 matmul ~100x slower).
  :func:`cpu_bf16_speedup` measures the matmul speed-up as a diagnostic only.

One type everywhere: a precision is its name (a ``str`` of :data:`DTYPES`); :func:`autocast_dtype` gives
the torch dtype where autocast needs one. The module imports torch only inside its functions, so the
command lines can offer these names in ``--help`` without loading torch.
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache

log = logging.getLogger(__name__)

FLOAT_DTYPES = ("fp32", "bf16", "fp16")  # autocast precisions: training, evaluation, query encoding
INT8 = "int8"  # not a torch dtype: marks dynamic int8 quantisation of the linear layers
INT8_HEAD = "int8-head"  # not a torch dtype: the same for the MLM head's linear layers only
DTYPES = ("auto", *FLOAT_DTYPES, INT8, INT8_HEAD)  # encode --dtype
TRAINING_DTYPES = (*FLOAT_DTYPES, "auto")  # --precision of training, search --dtype


def auto_dtype(device: str) -> str:
    """What ``auto`` means on ``device`` (the one home of the rule, module doc): bf16 on GPUs that
    support it, else fp16; on CPUs bf16 where the cores have native bf16 instructions, else fp32."""
    import torch

    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def resolve_dtype(dtype: str, device: str) -> str:
    """A ``--dtype`` name made concrete for encoding on ``device`` (``auto`` as :func:`auto_dtype`),
    checked against what the device runs."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; valid: {DTYPES}")
    cuda = device.startswith("cuda")
    if dtype in (INT8, INT8_HEAD) and cuda:
        raise ValueError(f"dtype={dtype!r} (dynamic quantisation) runs on CPU only; use fp16/bf16 on GPUs.")
    if dtype == "fp16" and not cuda:
        raise ValueError("dtype='fp16' needs a GPU (CPU fp16 matmul is emulated and slow); use auto, fp32 or int8.")
    return auto_dtype(device) if dtype == "auto" else dtype


def training_precision(precision: str, use_cpu: bool = False) -> str:
    """A training ``--precision`` with ``auto`` made concrete (:func:`auto_dtype`) for the device that
    training uses: the GPU when there is one and ``use_cpu`` is false, else the CPU."""
    import torch

    if precision not in TRAINING_DTYPES:
        raise ValueError(f"precision={precision!r}; valid: {TRAINING_DTYPES}")
    if precision != "auto":
        return precision
    return auto_dtype("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")


def autocast_dtype(dtype: str):
    """The torch dtype autocast runs ``dtype`` in: ``torch.bfloat16`` / ``torch.float16``; ``None`` for
    fp32 and the int8 names (no autocast)."""
    import torch

    if dtype not in DTYPES or dtype == "auto":
        raise ValueError(f"dtype={dtype!r}: not a concrete precision; valid: {DTYPES[1:]}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX): torch's own probe,
    else the ``/proc/cpuinfo`` flags. Deterministic: no timing is involved."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(p) for p in probes):
        return any(bool(p()) for p in probes)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = set(" ".join(line for line in fh if line.startswith("flags")).split())
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


@lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of a small encoder-shaped matmul on this CPU (measured once per process).

    A diagnostic for benchmarks and bug reports, never a decision: timings move with the machine's
    load, and ``auto`` must not. Costs well under a second.
    """
    import time

    import torch

    a = torch.randn(256, 384)
    b = torch.randn(384, 1536)
    times = {}
    for dt in (torch.float32, torch.bfloat16):
        x, y = a.to(dt), b.to(dt)
        x @ y  # warm-up
        runs = []
        for _ in range(7):  # the fastest of 7: robust to a busy core
            start = time.perf_counter()
            x @ y
            runs.append(time.perf_counter() - start)
        times[dt] = min(runs)
    speedup = times[torch.float32] / max(times[torch.bfloat16], 1e-9)
    log.info("CPU bf16 matmul speed-up over fp32: %.2fx", speedup)
    return speedup


def default_device():
    """This process's GPU when there is one (``LOCAL_RANK`` under torchrun), else the CPU: a ``torch.device``."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return torch.device("cpu")
