"""Per-channel robust intensity normalisation, stored with the model so prediction matches training.

Two modes:

- ``per_image`` (the default): every image is scaled by its own percentiles, computed over the
  whole image (subsampled when large), in training and in prediction alike. Images of the same
  kind that differ in brightness, exposure or stain then look the same to the network, as in
  CSBDeep/StarDist and Cellpose.
- ``dataset``: one set of bounds, measured on the training images, is applied to every image;
  for data where absolute intensity carries the class. Model files written before the modes
  existed load in this mode, so they predict exactly as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

PER_IMAGE = "per_image"
DATASET = "dataset"
MODES = (PER_IMAGE, DATASET)
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.8
# Pixels per channel from which an image's percentiles are taken (a regular grid beyond that):
# the bounds of a 50k x 50k slide then cost one strided read.
IMAGE_SAMPLES = 2_000_000

# Network input = ((x - low) / (high - low) - CENTRE) / SPREAD: the [0, 1] range maps to [-2, 2].
CENTRE = 0.5
SPREAD = 0.25
# Network inputs are clipped to +-INPUT_LIMIT: an outlier thousands of ranges away (a float32
# no-data value such as -3.4e38) then saturates instead of overflowing float32 into NaN.
INPUT_LIMIT = 1e4
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Normalisation:
    """Maps each channel's ``low`` to 0 and ``high`` to 1, then standardises ``(v - 0.5) / 0.25``.

    A degenerate channel (``high == low``, e.g. a constant image) uses ``high = low + 1``.

    Attributes
    ----------
    low, high
        The bounds applied by :meth:`apply`. In ``per_image`` mode they are the training images'
        pooled bounds, kept for reference; :meth:`for_image` gives the bounds of one image.
    mode
        ``"per_image"`` or ``"dataset"`` (see the module docstring).
    percentiles
        The (low, high) percentiles, 0-100, that :meth:`for_image` maps to 0 and 1.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    mode: str = DATASET
    percentiles: tuple[float, float] = (LOW_PERCENTILE, HIGH_PERCENTILE)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"normalisation mode must be one of {MODES}, got {self.mode!r}")
        low_p, high_p = (float(v) for v in self.percentiles)
        if not 0 <= low_p < high_p <= 100:
            raise ValueError(f"need 0 <= low < high <= 100 percentiles; got {self.percentiles}")
        object.__setattr__(self, "percentiles", (low_p, high_p))
        low = tuple(float(v) for v in self.low)
        high = tuple(float(v) for v in self.high)
        if not low or len(low) != len(high):
            raise ValueError(f"low and high need one value per channel; got {len(low)} and {len(high)}")
        if not all(np.isfinite(low + high)):
            raise ValueError(f"normalisation bounds must be finite; got low={low}, high={high}")
        # max(): lo + 1 == lo beyond 2**53 (a constant 64-bit image), which would divide by 0.
        high = tuple(
            h if _usable_span(lo, h) else lo + max(1.0, abs(lo) * 2**-20) for lo, h in zip(low, high)
        )
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
            raise ValueError(
                f"expected (C, H, W) or (N, C, H, W) with C = {self.in_channels}; got shape {x.shape}"
            )
        low = np.asarray(self.low)[:, None, None]
        with np.errstate(over="ignore"):  # a span beyond float64 takes the path in halves below
            scale = (1.0 / (SPREAD * (np.asarray(self.high) - np.asarray(self.low))))[:, None, None]
        wide = x.dtype.kind == "f" and x.dtype.itemsize > 4
        if wide or not np.all(np.abs(np.concatenate([low, scale], axis=None)) < _FLOAT32_MAX):
            # float64 images, or bounds / scales beyond float32 (1e300 intensities, a 1e-40 range).
            # In halves, so that x - low cannot overflow float64 when the image spans +-1.8e308.
            half_low = low / 2
            half_scale = 1.0 / (SPREAD * (np.asarray(self.high)[:, None, None] / 2 - half_low))
            wide_out = (np.asarray(x, dtype=np.float64) / 2 - half_low) * half_scale - CENTRE / SPREAD
            np.clip(wide_out, -INPUT_LIMIT, INPUT_LIMIT, out=wide_out)
            return wide_out.astype(np.float32)
        out = np.array(x, dtype=np.float32, copy=True)
        with np.errstate(over="ignore"):  # an outlier beyond float32 is clipped just below
            out -= low.astype(np.float32)
            out *= scale.astype(np.float32)
        out -= np.float32(CENTRE / SPREAD)
        np.clip(out, -INPUT_LIMIT, INPUT_LIMIT, out=out)
        return out

    def for_image(self, image_slices: Any) -> Normalisation:
        """The fixed-bounds normalisation to apply to one image.

        Parameters
        ----------
        image_slices
            The whole image as ``(S, C, H, W)`` slices (numpy, memmap or dask); ignored in
            ``dataset`` mode, where ``self`` is returned.
        """
        if self.mode == DATASET:
            return self
        low, high = image_bounds(image_slices, self.percentiles)
        if len(low) != self.in_channels:
            raise ValueError(f"expected an image with {self.in_channels} channel(s), got {len(low)}")
        return Normalisation(low=low, high=high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "low": list(self.low),
            "high": list(self.high),
            "mode": self.mode,
            "percentiles": list(self.percentiles),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalisation:
        # Files written before the modes existed hold only low/high: dataset bounds.
        return cls(
            low=tuple(data["low"]),
            high=tuple(data["high"]),
            mode=data.get("mode", DATASET),
            percentiles=tuple(data.get("percentiles", (LOW_PERCENTILE, HIGH_PERCENTILE))),
        )


def image_bounds(
    image_slices: Any,
    percentiles: tuple[float, float] = (LOW_PERCENTILE, HIGH_PERCENTILE),
    max_samples: int = IMAGE_SAMPLES,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel percentiles of a whole ``(S, C, H, W)`` image, on a regular grid of at most
    ``max_samples`` pixels per channel: deterministic, the same in training and prediction, and
    one strided read for memory-mapped, zarr or dask images."""
    sample = finite_sample(image_slices, max_samples)
    bounds = []
    for channel in range(sample.shape[1]):  # one channel in float64 at a time: 16 MB, not 48 + a copy
        values = sample[:, channel].astype(np.float64).ravel()
        bounds.append(np.percentile(values, list(percentiles), overwrite_input=True))
    low, high = np.transpose(bounds)
    return tuple(low.tolist()), tuple(high.tolist())


def finite_sample(image_slices: Any, max_samples: int = IMAGE_SAMPLES) -> np.ndarray:
    """The ``(S, C, h, w)`` pixels of a ``(S, C, H, W)`` image on a regular grid of at most
    ``max_samples`` pixels per channel (every pixel of smaller images), in the image's dtype.

    Raises
    ------
    ValueError
        For an empty image, or NaN / infinite values among the samples.
    """
    s, c, h, w = (int(n) for n in image_slices.shape)
    if s * h * w == 0:
        raise ValueError(f"cannot normalise an empty image (slices of shape {tuple(image_slices.shape)})")
    step = max(1, math.ceil(math.sqrt(s * h * w / max_samples)))
    sample = np.asarray(image_slices[:, :, ::step, ::step])
    if sample.dtype.kind in "fc" and not np.isfinite(sample).all():
        raise ValueError("the image contains NaN or infinite values; clean or fill them first")
    return sample


def _usable_span(low: float, high: float) -> bool:
    # A span so small that its inverse overflows float64 (a subnormal range) is as degenerate
    # as a zero one.
    span = SPREAD * (high - low)
    return span != 0 and math.isfinite(1.0 / span)


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
        raise ValueError(
            f"need 0 <= low_percentile < high_percentile <= 100; got {low_percentile} and {high_percentile}"
        )
    slices = [np.asarray(s) for s in image_slices]
    for s in slices:
        if s.ndim != 3:
            raise ValueError(f"image slices must be (C, H, W); got shape {s.shape}")
        if s.shape[0] != slices[0].shape[0]:
            raise ValueError(
                f"all images must have the same number of channels: {slices[0].shape[0]} and {s.shape[0]}"
            )
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
            [
                s.reshape(channels, -1)[:, picks[a:b] - start]
                for s, start, a, b in zip(slices, offsets[:-1], bounds[:-1], bounds[1:])
            ],
            axis=1,
        )
    low, high = np.percentile(values.astype(np.float64), [low_percentile, high_percentile], axis=1)
    return Normalisation(low=tuple(low.tolist()), high=tuple(high.tolist()))
