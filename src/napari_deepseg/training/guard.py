"""One training iteration made interruptible and all-or-nothing.

Stopping at the generator's ``yield`` waits for the iteration in progress, which can take seconds
(large patches, a slow CPU). So the guard also looks at the stop event before every layer of the
forward pass and as each parameter's gradient arrives in the backward pass, and abandons the
iteration there. An abandoned iteration (stopped, a non-finite loss or gradient, out of memory)
never reaches the optimiser step: the weights stay those of the last finished step, the batch-norm
statistics its forward pass moved are put back, and its gradients are dropped.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from ..config import TrainingConfig
from ..errors import DeviceOutOfMemoryError, TrainingDivergedError, is_out_of_memory, release_cached_memory

T = TypeVar("T")


class _StopRequestedError(Exception):
    """Raised inside the network's forward or backward pass when a stop was requested."""


class IterationGuard:
    """Runs each iteration of a run (:meth:`run`); :meth:`remove` when the run ends.

    Hooks check the stop event only in the thread running the iteration, so a copy of the network
    predicting in another thread (the hooks travel with ``copy.deepcopy``) never sees them fire.
    """

    def __init__(
        self, module: torch.nn.Module, stop: threading.Event, config: TrainingConfig, device: torch.device
    ) -> None:
        self._config, self._device = config, device
        # The thread running an iteration, while one runs: a list so that the hook holds it, not
        # the guard (a copy of the network would otherwise keep the original alive).
        self._thread: list[int | None] = [None]
        self._number = 0  # the iteration running
        thread = self._thread

        def check(*_: Any) -> None:
            if thread[0] == threading.get_ident() and stop.is_set():
                raise _StopRequestedError

        leaves = [m for m in module.modules() if next(m.children(), None) is None]
        self._params = [p for p in module.parameters() if p.requires_grad]
        self._handles = [m.register_forward_pre_hook(check) for m in leaves]
        self._handles += [p.register_hook(check) for p in self._params]
        # Taken after any memory-format change: ``module.to`` replaces buffer tensors.
        self._buffers = list(module.buffers())
        self._saved = [b.detach().clone() for b in self._buffers]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def run(self, number: int, iteration: Callable[[], T]) -> T | None:
        """The result of ``iteration()``, iteration ``number`` of the model's history (1-based);
        ``None`` when a stop request abandoned it.

        Raises
        ------
        TrainingDivergedError
            From :meth:`check_loss` or :meth:`check_gradients`, called by ``iteration``.
        DeviceOutOfMemoryError
            When an allocation failed; the message says what to lower.

        The weights are left as they were in each of these cases.
        """
        if self._saved:
            torch._foreach_copy_(self._saved, self._buffers)
        self._thread[0], self._number = threading.get_ident(), number
        out_of_memory = None
        try:
            return iteration()
        except _StopRequestedError:
            pass
        except TrainingDivergedError:
            self._undo()
            raise
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            # Only its text is kept: raising from here once the error (its traceback holds the
            # failed pass's activations) is gone lets the cache below really be handed back.
            out_of_memory = (str(err) or type(err).__name__).splitlines()[0]
        finally:
            self._thread[0] = None
        self._undo()
        if out_of_memory is None:
            return None
        release_cached_memory(self._device)
        raise DeviceOutOfMemoryError(f"{self._out_of_memory_message()} ({out_of_memory})")

    def check_loss(self, loss: torch.Tensor) -> float:
        """The loss as a float; :class:`TrainingDivergedError` when it is not finite."""
        value = float(loss.detach())
        if not math.isfinite(value):
            raise self._diverged(f"the loss is {value}")
        return value

    def check_gradients(self) -> None:
        """:class:`TrainingDivergedError` when a gradient is NaN or infinite. One sum per tensor
        (a NaN or inf anywhere makes it non-finite): 6 ms for the 24 M-parameter U-Net on
        the CPU, under 2 % of its iteration."""
        grads = [p.grad for p in self._params if p.grad is not None]
        if grads and not bool(torch.stack([g.sum() for g in grads]).sum().isfinite()):
            raise self._diverged("its gradients are not finite")

    def _undo(self) -> None:
        if self._saved:
            torch._foreach_copy_(self._buffers, self._saved)
        for p in self._params:
            p.grad = None

    def _diverged(self, what: str) -> TrainingDivergedError:
        n = self._number
        return TrainingDivergedError(
            f"training diverged at iteration {n} ({what}): stopped before that step, the model keeps "
            f"the weights of iteration {n - 1}; lower the learning rate or check the image for "
            "extreme values",
            iteration=n,
        )

    def _out_of_memory_message(self) -> str:
        n, config = self._number, self._config
        elsewhere = "" if self._device.type == "cpu" else ", or train on the CPU"
        return (
            f"out of memory on {self._device} at iteration {n} (batch size {config.batch_size}, "
            f"patch size {config.patch_size}): lower the batch size or the patch size{elsewhere}; "
            f"training stopped and the model keeps the weights of iteration {n - 1}"
        )
