"""Compiled kernels (``csrc/patch_gram.c``) for the scoring pass: per-sample Gram matrices of conv patches of
``|x|`` (the patch form of relief_nb.core.scores), and batch sums and maxima of ``|x|`` (Linear inputs, residual maps).

Written by hand because the pure-torch patch form spends most of a pruning pass copying patches and in tiny
batched matrix products (9 x 1024 x 9 per sample and channel on ResNet-20). The kernel never builds the patches:
it forms each lag's products once per pixel (see the C file), reads channels-last activations without converting
them and takes the channel maxima on the way. It is plain C, compiled on first use with the system C compiler
(under a second, where a torch C++ extension needs about a minute) and loaded with ctypes. It splits the batch with
OpenMP over torch's own worker threads: the library links libgomp.so.1, which torch has already loaded.

Without a compiler, or with ``RELIEF_NB_NATIVE=0`` in the environment, the functions here return None (after one
warning if the build failed) and the callers use pure-torch code, which gives the same numbers
(tests/test_native.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

__all__ = ["accepts", "available", "batch_abs_stats", "cache_dir", "patch_grams"]

SOURCE = Path(__file__).with_name("csrc") / "patch_gram.c"
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
_ARGTYPES = [ctypes.c_void_p, *[ctypes.c_int64] * 16, ctypes.c_void_p, ctypes.c_void_p]

_lock = threading.Lock()
_state: dict = {}  # "lib": the loaded library, or None where it cannot be built


def cache_dir() -> Path:
    """Where the compiled kernel is kept: ``$RELIEF_NB_CACHE``, else ``$XDG_CACHE_HOME/relief_nb`` or
    ``~/.cache/relief_nb``."""
    if os.environ.get("RELIEF_NB_CACHE"):
        return Path(os.environ["RELIEF_NB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "relief_nb"


def _cpu_id() -> str:
    """-march=native code is specific to the CPU: its flags are part of the library's name."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return f"{platform.machine()} {flags}"


def _build() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(_FLAGS).encode() + _cpu_id().encode()).hexdigest()[:16]
    target = cache_dir() / f"patch_gram-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            result = subprocess.run([compiler, *_FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True,
                                    text=True)
            if result.returncode:
                raise RuntimeError(f"{compiler} failed:\n{result.stderr.strip()}")
            os.replace(tmp, target)  # atomic: concurrent builds (test workers) never load a half-written file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    lib.relief_patch_grams.argtypes = _ARGTYPES
    lib.relief_patch_grams.restype = ctypes.c_int
    lib.relief_batch_abs_stats.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 3, ctypes.c_void_p, ctypes.c_void_p]
    lib.relief_batch_abs_stats.restype = None
    return lib


def _library() -> ctypes.CDLL | None:
    if os.environ.get("RELIEF_NB_NATIVE", "1") == "0":
        return None
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"] = _build()
            except (OSError, RuntimeError) as err:
                warnings.warn(f"relief_nb: the compiled scoring kernel is unavailable, using the pure-torch forms "
                              f"(same results, slower): {err}", RuntimeWarning, stacklevel=3)
                _state["lib"] = None
    return _state["lib"]


def available() -> bool:
    """True if the compiled kernel is built (or can be built now) and enabled."""
    return _library() is not None


def accepts(x: torch.Tensor) -> bool:
    """Can the compiled kernels take ``x``: float32 on the CPU, with the kernel built and enabled?"""
    return x.dtype == torch.float32 and x.device.type == "cpu" and available()


def patch_grams(x: torch.Tensor, layer: torch.nn.Conv2d,
                out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(gram, channel_max)`` for the conv ``layer``'s input ``x`` (N, C, H, W), any strides:

    * ``gram`` (C, pairs, N): upper triangles (``torch.triu_indices`` order) of ``P_nc P_nc^T``, with ``P_nc``
      the patches of ``|x_nc|`` under the layer's window;
    * ``channel_max`` (C,): ``max_n max |x_nc|``, NaN if ``x`` holds NaN or inf.

    None when the kernel does not apply (not float32 on the CPU) or is unavailable.
    """
    if x.ndim != 4 or not accepts(x):
        return None
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()  # the kernel reads dense samples, channels-last or NCHW
    n, c, h, w = x.shape
    kh, kw = layer.kernel_size
    kk = kh * kw
    gram = torch.empty(c, kk * (kk + 1) // 2, n)
    cmax = torch.empty(n, c)
    code = _library().relief_patch_grams(x.data_ptr(), n, c, h, w, x.stride(0), x.stride(1), kh, kw,
                                         *layer.stride, *layer.padding, *layer.dilation, *out_hw, gram.data_ptr(),
                                         cmax.data_ptr())
    if code:
        raise MemoryError("the patch-Gram kernel could not allocate its buffers")
    return gram, cmax.amax(0)


def batch_abs_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(sum_n |x_n|, max_n |x_n|)``, each shaped like one sample, for a float32 CPU batch ``x`` (N, ...) whose
    samples are dense (contiguous, or channels-last 4-D); the maxima are NaN where ``x`` holds NaN or inf. None
    when the kernel does not apply."""
    if x.ndim < 2 or x.shape[0] == 0 or not accepts(x):
        return None
    if x.is_contiguous():
        order = tuple(range(x.ndim))
    elif x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        order = (0, 2, 3, 1)
    else:
        return None
    shape = x.permute(order).shape[1:]  # each sample is one dense run in this order
    total, peak = torch.empty(shape), torch.empty(shape)
    _library().relief_batch_abs_stats(x.data_ptr(), x.shape[0], total.numel(), x.stride(0), total.data_ptr(),
                                      peak.data_ptr())
    back = [order.index(d) - 1 for d in range(1, x.ndim)]
    return total.permute(back), peak.permute(back)
