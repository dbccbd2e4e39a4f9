"""Strict float32 where the method measures: the scoring pass and the export / compaction self-checks.

On NVIDIA GPUs PyTorch runs float32 convolutions in TF32 by default (cuDNN's ``allow_tf32``), and matmuls too if
the user allows it. TF32 keeps 10 mantissa bits: on an H200 NNrelief's scores moved by up to 11 % (LeNet-5) and
100 % (a VGG-like classifier) relative to the CPU's, and the exported model differed from the masked one by up to
1.6e-3, so every compaction was refused. Inside :func:`strict_fp32` both are off; the user's settings (global,
process-wide) are restored on exit, whatever happened inside. Training keeps whatever the user allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["strict_fp32", "tf32_settings"]


def _switches() -> list[tuple[object, str, object, str]]:
    """(owner, attribute, strict value) of the TF32 switches this torch has: the ``fp32_precision`` API of torch
    >= 2.9 where it exists (mixing it with the legacy flags is an error there), else the legacy flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
        return [(conv, "fp32_precision", "ieee", "cudnn.conv"), (matmul, "fp32_precision", "ieee", "cuda.matmul")]
    return [(torch.backends.cudnn, "allow_tf32", False, "cudnn"), (matmul, "allow_tf32", False, "cuda.matmul")]


def tf32_settings() -> dict[str, object]:
    """The TF32 switches as they stand now, by name (for tests and reports)."""
    return {f"{label}.{attr}": getattr(owner, attr) for owner, attr, _, label in _switches()}


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Run the block in full float32 (TF32 off for convolutions and matmuls), restoring the settings after."""
    switches = _switches()
    saved = [getattr(owner, attr) for owner, attr, _, _ in switches]
    legacy = switches[0][1] == "allow_tf32"  # there, matmuls also follow set_float32_matmul_precision
    precision = torch.get_float32_matmul_precision() if legacy else None
    try:
        for owner, attr, strict, _ in switches:
            setattr(owner, attr, strict)
        if legacy and precision != "highest":
            torch.set_float32_matmul_precision("highest")
        yield
    finally:
        for (owner, attr, _, _), value in zip(switches, saved):
            setattr(owner, attr, value)
        if legacy and torch.get_float32_matmul_precision() != precision:
            torch.set_float32_matmul_precision(precision)
