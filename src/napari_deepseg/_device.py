"""Device and numeric-precision choices shared by training and prediction."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator

import torch

from .config import Precision


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'mps'") from err
    # torch also accepts 'meta', 'xpu', 'privateuseone'...: a run there would fail later and unclearly.
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but no CUDA GPU is available")
        if (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} was asked for but this machine has {torch.cuda.device_count()} CUDA GPU(s)"
                f" (cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {name!r} was asked for but Apple MPS is not available here")
    return device


def available_devices() -> dict[str, str]:
    """The devices this machine can train on, as ``{value: label}`` for a picker.

    ``"auto"`` and ``"cpu"`` are always there; each CUDA GPU is listed by index with its name,
    then Apple MPS when present. Every value is accepted by :func:`resolve_device`.
    """
    devices = {"auto": "auto (GPU if available)", "cpu": "cpu"}
    for i in range(torch.cuda.device_count()):
        devices[f"cuda:{i}"] = f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices["mps"] = "mps"
    return devices


def worker_thread_count() -> int:
    """torch threads for a training worker: one core fewer than torch's default, left to
    napari's GUI thread. On 2 cores this halved the p99 GUI stall (50 -> 26 ms) for 7.5 % slower
    training (benchmarks/ui_latency.py). Set it inside the worker: the count is per thread."""
    return max(1, torch.get_num_threads() - 1)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix units (AMX-BF16 or AVX512-BF16).

    Older AVX512 CPUs emulate bf16 and are slower than fp32 there, so they do not count.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: Precision | str, device: torch.device) -> torch.dtype:
    """The autocast dtype to use, or ``torch.float32`` for none."""
    precision = Precision(precision)
    if precision is Precision.FP32:
        return torch.float32
    if precision is Precision.BF16:
        if device.type == "mps":
            raise ValueError("bf16 precision is not supported on MPS; use 'fp32'")
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[None]:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    # channels_last pays off with oneDNN bf16 kernels and cuDNN tensor cores; neutral-to-worse otherwise.
    return dtype != torch.float32 and device.type in ("cpu", "cuda")


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put a module in eval mode and restore its previous mode afterwards (a preview mid-training)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
