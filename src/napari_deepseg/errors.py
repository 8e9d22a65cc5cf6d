"""The faults a run can end with besides bad input (``ValueError`` / ``TypeError``), each with a
message that says what to do; the model keeps the weights of its last finished step."""

from __future__ import annotations

import torch

# Texts of torch's allocation failures: CUDA and MPS ("... out of memory"), the CPU allocator.
_OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory")


class DeviceOutOfMemoryError(RuntimeError):
    """The device ran out of memory (a GPU's, or the RAM for the CPU).

    The message names the device and the settings to lower: the batch size or the patch size
    for training, the tile size for prediction, and ends with the first line of torch's error.
    """


class TrainingDivergedError(FloatingPointError):
    """The loss or the gradients of an iteration were not finite (NaN or infinite).

    That iteration's step is not applied: the model keeps the weights of ``iteration - 1``.
    """

    def __init__(self, message: str, *, iteration: int) -> None:
        super().__init__(message)
        self.iteration = iteration


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure of torch or Python (any device)."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):  # torch.OutOfMemoryError in 2.5+
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(t in text for t in _OUT_OF_MEMORY_TEXTS)


def release_cached_memory(device: torch.device) -> None:
    """Hand the blocks torch's allocator caches back, so that a retry finds them free."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
