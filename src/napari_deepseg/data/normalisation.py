"""Per-channel robust intensity normalisation, stored with the model so prediction matches training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Network input = ((x - low) / (high - low) - CENTRE) / SPREAD: the [0, 1] range maps to [-2, 2].
CENTRE = 0.5
SPREAD = 0.25


@dataclass(frozen=True)
class Normalisation:
    """Maps each channel's ``low`` to 0 and ``high`` to 1, then standardises ``(v - 0.5) / 0.25``.

    A degenerate channel (``high == low``, e.g. a constant image) uses ``high = low + 1``.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        low = tuple(float(v) for v in self.low)
        high = tuple(float(v) for v in self.high)
        if not low or len(low) != len(high):
            raise ValueError(f"low and high need one value per channel; got {len(low)} and {len(high)}")
        if not all(np.isfinite(low + high)):
            raise ValueError(f"normalisation bounds must be finite; got low={low}, high={high}")
        high = tuple(h if h != lo else lo + 1.0 for lo, h in zip(low, high))
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def in_channels(self) -> int:
        return len(self.low)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Return the network input for ``x`` as a new float32 array.

        Parameters
        ----------
        x
            ``(C, H, W)`` or ``(N, C, H, W)`` intensities; the channel axis is -3.
        """
        x = np.asarray(x)
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"expected (C, H, W) or (N, C, H, W) with C = {self.in_channels}; "
                             f"got shape {x.shape}")
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        scale = (1.0 / (SPREAD * (np.asarray(self.high) - np.asarray(self.low)))).astype(np.float32)
        out = np.array(x, dtype=np.float32, copy=True)
        out -= low
        out *= scale[:, None, None]
        out -= np.float32(CENTRE / SPREAD)
        return out

    def to_dict(self) -> dict[str, list[float]]:
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalisation:
        return cls(low=tuple(data["low"]), high=tuple(data["high"]))


def compute_normalisation(
    image_slices: list[np.ndarray],
    *,
    low_percentile: float = 1.0,
    high_percentile: float = 99.8,
    max_samples: int = 1_000_000,
    rng: np.random.Generator | int | None = None,
) -> Normalisation:
    """Robust per-channel percentiles over all slices.

    Parameters
    ----------
    image_slices
        ``(C, H, W)`` slices with the same ``C``.
    low_percentile, high_percentile
        Percentiles (0-100) mapped to 0 and 1.
    max_samples
        Above this many pixels in total, percentiles are taken over this many pixels drawn
        uniformly (with replacement) from all slices.
    rng
        Generator or seed for the subsampling; ``None`` means seed 0, so the result is
        always deterministic.

    Returns
    -------
    Normalisation
    """
    if not image_slices:
        raise ValueError("need at least one image slice to compute a normalisation")
    if not 0 <= low_percentile < high_percentile <= 100:
        raise ValueError(f"need 0 <= low_percentile < high_percentile <= 100; "
                         f"got {low_percentile} and {high_percentile}")
    slices = [np.asarray(s) for s in image_slices]
    for s in slices:
        if s.ndim != 3:
            raise ValueError(f"image slices must be (C, H, W); got shape {s.shape}")
        if s.shape[0] != slices[0].shape[0]:
            raise ValueError(f"all images must have the same number of channels: "
                             f"{slices[0].shape[0]} and {s.shape[0]}")
    channels = slices[0].shape[0]
    sizes = np.array([s.shape[1] * s.shape[2] for s in slices], dtype=np.int64)
    total = int(sizes.sum())
    if total <= max_samples:
        values = np.concatenate([s.reshape(channels, -1) for s in slices], axis=1)
    else:
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng or 0)
        picks = np.sort(generator.integers(0, total, size=max_samples))
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        bounds = np.searchsorted(picks, offsets)
        values = np.concatenate(
            [s.reshape(channels, -1)[:, picks[a:b] - start]
             for s, start, a, b in zip(slices, offsets[:-1], bounds[:-1], bounds[1:])], axis=1)
    low, high = np.percentile(values.astype(np.float64), [low_percentile, high_percentile], axis=1)
    return Normalisation(low=tuple(low.tolist()), high=tuple(high.tolist()))
