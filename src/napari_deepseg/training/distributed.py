"""Training one model in several processes at once (``torchrun``): DistributedDataParallel.

The :class:`~napari_deepseg.Trainer` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or an existing process group. With one process
:class:`Collective` does nothing: every method hands its input back, so the loop runs as before.

With several, every rank takes the same decision at the same step:

- the batch: each step, every rank draws the run's ``world_size * batch_size`` patches from the
  one seeded stream and trains on its own share, so the global batch is exactly what a single
  process with that batch size draws; augmentation draws from ``seed + rank``;
- the weights: DDP broadcasts rank 0's at the start and all-reduces the gradients; BatchNorm
  layers become synchronised (global batch statistics), so the running statistics, the weights
  and their average (EMA) stay identical on every rank;
- the end: rank 0's clock counts the time budget, a stop requested on any rank stops all, labels
  given on rank 0 reach every rank before the same iteration, and the loss checked by the
  divergence guard is the mean over ranks.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data.regions import LAZY_PIXELS, SparseLabels
from ..data.training_set import TrainingSet

_TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_main_process() -> bool:
    """Whether this process writes the files of a run: rank 0 of a torchrun job (or of an
    initialised process group), and any process outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


class Collective:
    """What the ranks of a run share; the identity for a single process (``world_size == 1``)."""

    def __init__(self) -> None:
        if dist.is_available() and dist.is_initialized():  # a script set up its own group
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        elif all(name in os.environ for name in _TORCHRUN):
            self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            self.rank, self.world_size = 0, 1
        self._created = False  # whether this run made the process group (and so destroys it)
        self._device = torch.device("cpu")
        self._lock = threading.Lock()
        self._outgoing: list[tuple[int, np.ndarray]] = []  # rank 0's label updates, in order
        self._labels_due = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        """``cuda:LOCAL_RANK`` for a CUDA device when distributed, else ``device``."""
        if self.distributed and device.type == "cuda":
            local = os.environ.get("LOCAL_RANK")  # else a script's own choice of GPU
            device = torch.device("cuda", int(local) if local else torch.cuda.current_device())
            torch.cuda.set_device(device)
        return device

    def seed(self, seed: int) -> None:
        """Give each rank its own augmentation stream (torch's global RNG) once the network is
        built, which the same ``seed`` made identical on every rank."""
        if self.distributed:
            torch.manual_seed(seed + self.rank)

    def start(self, trained: nn.Module, average: nn.Module, device: torch.device) -> nn.Module:
        """Join (or create) the process group and return the network to call: ``trained`` with
        synchronised BatchNorm inside DDP. ``average`` (the EMA copy) gets rank 0's weights."""
        if not self.distributed:
            return trained
        self._device = device
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
            self._created = True
        for tensor in average.state_dict().values():
            dist.broadcast(tensor, src=0)
        cuda = device.type == "cuda"
        _swap_batch_norm(trained, nn.SyncBatchNorm if cuda else _CpuSyncBatchNorm)
        return DistributedDataParallel(trained, device_ids=[device.index] if cuda else None)

    def close(self, trained: nn.Module) -> None:
        """Plain BatchNorm back in ``trained``; the process group destroyed if :meth:`start`
        created it."""
        if not self.distributed:
            return
        _swap_batch_norm(trained, nn.BatchNorm2d)
        if self._created and dist.is_initialized():
            dist.destroy_process_group()
        self._created = False

    def stop_event(self, stop: threading.Event) -> threading.Event:
        """The event the iteration guard watches. Distributed, a stop must not abandon an
        iteration on one rank while the others wait for its gradients: it takes effect at the
        next :meth:`agree`, on every rank at once."""
        return threading.Event() if self.distributed else stop

    def agree(self, stop: bool, elapsed: float) -> tuple[bool, float]:
        """Before an iteration: whether any rank asked to stop, and rank 0's training seconds."""
        if not self.distributed:
            return stop, elapsed
        main = self.rank == 0
        with self._lock:
            labels = main and bool(self._outgoing)
        total = self._sum([float(stop), elapsed if main else 0.0, float(labels)])
        self._labels_due = total[2] > 0
        return total[0] > 0, total[1]

    def after_step(self, elapsed: float, error_rate: float) -> tuple[float, float]:
        """After a step: rank 0's training seconds and the error rate over the ranks that had
        labelled pixels (``nan`` when none had)."""
        if not self.distributed:
            return elapsed, error_rate
        known = not np.isnan(error_rate)
        total = self._sum([elapsed if self.rank == 0 else 0.0, error_rate if known else 0.0, float(known)])
        return total[0], total[1] / total[2] if total[2] else float("nan")

    def mean(self, loss: torch.Tensor) -> torch.Tensor:
        """The mean of ``loss`` over the ranks (detached), so that a non-finite loss on any rank
        stops every rank at the same iteration; ``loss`` itself for a single process."""
        if not self.distributed:
            return loss
        total = loss.detach().clone()
        dist.all_reduce(total)
        return total / self.world_size

    def share(self, batch: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """This rank's part of the ``world_size * batch_size`` patches every rank drew."""
        if not self.distributed:
            return batch
        size = len(batch[0]) // self.world_size
        part = slice(self.rank * size, (self.rank + 1) * size)
        return batch[0][part], batch[1][part]

    def update_labels(self, data: TrainingSet, labels: Any, pair: int) -> None:
        """Queue new labels. Distributed, rank 0's count: they reach the other ranks at the next
        :meth:`apply_updates`; calls on other ranks are ignored (a script that runs the same code
        on every rank does the right thing)."""
        if self.rank != 0:
            return
        with self._lock:  # queued and recorded at once: apply_updates sends what it applies
            data.update_labels(labels, pair)
            if self.distributed:
                self._outgoing.append((pair, _snapshot(labels)))

    def apply_updates(self, data: TrainingSet) -> None:
        """Bring queued labels in: rank 0's, sent to every rank, when :meth:`agree` said so."""
        if not self.distributed:
            data.apply_updates()
            return
        if not self._labels_due:
            return
        self._labels_due = False
        with self._lock:
            sent, self._outgoing = (self._outgoing, []) if self.rank == 0 else ([], self._outgoing)
            if self.rank == 0:
                data.apply_updates()
        box: list[Any] = [sent]
        dist.broadcast_object_list(box, src=0, device=self._device)
        if self.rank != 0:
            for pair, labels in box[0]:
                data.update_labels(labels, pair)
            data.apply_updates()

    def _sum(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self._device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]


class _CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the global batch on the CPU (gloo), where torch's SyncBatchNorm does not
    run (CUDA kernels; DDP refuses it in a CPU module). One all-reduce per layer and pass: the
    sums of x and x**2, accumulated in float64 so that the variance from them stays exact to
    float32 precision; autograd differentiates through it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.tensor([x.numel() / c], dtype=torch.float64)
        sums = [xf.sum((0, 2, 3), dtype=torch.float64), xf.square().sum((0, 2, 3), dtype=torch.float64)]
        total = _AllReduceSum.apply(torch.cat([*sums, count]))
        n = total[2 * c]
        mean64 = total[:c] / n
        var = (total[c : 2 * c] / n - mean64.square()).clamp_min(0).float()
        mean = mean64.float()
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                tracked = float(self.num_batches_tracked)  # type: ignore[arg-type]
                momentum = 1.0 / tracked if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * float(n) / max(float(n) - 1, 1.0), momentum)
        y: torch.Tensor = (xf - mean.view(1, c, 1, 1)) * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


class _AllReduceSum(torch.autograd.Function):
    """The sum over the ranks; each rank's input gets the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def _swap_batch_norm(module: nn.Module, kind: type[nn.modules.batchnorm._BatchNorm]) -> None:
    """Replace every 2-D BatchNorm in ``module`` by one of ``kind`` holding the same parameter and
    buffer tensors (so the optimiser, the guard and the weight average are unaffected)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d | nn.SyncBatchNorm) and type(child) is not kind:
            new = kind(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            _swap_batch_norm(child, kind)


LARGE_LABELS = LAZY_PIXELS  # pixels above which labels travel as a sparse snapshot


def _snapshot(labels: Any) -> Any:
    """What is sent to the other ranks: an immutable snapshot, of the painted boxes alone when the
    labels are large or lazy (a slide's labels are not copied, nor pickled, whole)."""
    if isinstance(labels, SparseLabels):  # already a snapshot that never changes
        return labels
    if isinstance(labels, np.ndarray) and labels.size <= LARGE_LABELS:
        return np.array(labels, copy=True)
    return SparseLabels.of(labels) if hasattr(labels, "shape") else np.array(labels, copy=True)
