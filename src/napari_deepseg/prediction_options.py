"""How a network is run over an image: tiling, device, precision and the run's callbacks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from ._device import resolve_device
from .config import Precision
from .tiling import TilingOptions

ProgressCallback = Callable[[int, int], None]  # (tiles done, tiles total)
TILING_FIELDS = ("tile_size", "overlap", "batch_size")


@dataclass(frozen=True)
class PredictionOptions:
    """How the network is run over an image: tiling, device, precision and the run's callbacks.

    Attributes
    ----------
    tiling
        Tile size, overlap and tiles per forward pass (:class:`TilingOptions`).
    device
        Where to run (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); ``None``: where
        the network is. :class:`SegmentationModel` moves its network there first
        (``model.to(device)``); the functions here require the network to be there already.
    precision
        ``"auto"`` (bf16 autocast on CPUs with native bf16 units and on CUDA, else fp32),
        ``"bf16"`` or ``"fp32"``.
    mirroring
        Test-time augmentation: average each tile's probabilities with those of its three mirror
        images (left-right, up-down, both; mirrored back). Four times the network time; smoother,
        usually slightly more accurate probabilities (docs/benchmarks.md measures it).
    progress
        Called with (tiles done, tiles total) after every tile.
    should_stop
        Asked after every tile; returning true aborts with ``InterruptedError``.
    """

    tiling: TilingOptions = TilingOptions()
    device: str | torch.device | None = None
    precision: Precision | str = Precision.AUTO
    mirroring: bool = False
    progress: ProgressCallback | None = None
    should_stop: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        try:
            precision = Precision(self.precision)  # also accepts "bf16"
        except ValueError:
            choices = ", ".join(repr(p.value) for p in Precision)
            raise ValueError(f"precision must be one of {choices}, got {self.precision!r}") from None
        object.__setattr__(self, "precision", precision)

    def replace(self, **changes: Any) -> PredictionOptions:
        """A copy with some fields changed; ``tile_size``, ``overlap`` and ``batch_size`` change
        the tiling, so ``options.replace(tile_size=512, precision="fp32")`` works."""
        unknown = set(changes) - {f.name for f in fields(self)} - set(TILING_FIELDS)
        if unknown:
            known = ", ".join([*TILING_FIELDS, *(f.name for f in fields(self))])
            raise TypeError(f"unknown prediction option(s) {', '.join(sorted(unknown))}; known: {known}")
        tiling = {k: changes.pop(k) for k in TILING_FIELDS if k in changes}
        if tiling:
            changes["tiling"] = dataclasses.replace(changes.get("tiling", self.tiling), **tiling)
        return dataclasses.replace(self, **changes)

    def device_for(self, module: torch.nn.Module) -> torch.device:
        """The network's device, after checking that it is the one asked for."""
        device = next(module.parameters()).device
        if self.device is not None:
            wanted = resolve_device(self.device)
            if wanted.type != device.type or wanted.index not in (None, device.index):
                raise ValueError(
                    f"the network is on {device}, not {wanted}: move it first (SegmentationModel.to)"
                )
        return device
