"""Joint image + mask augmentation of training batches.

Geometric steps move image and mask together; the mask is only ever resampled with nearest
interpolation (``tv_tensors.Mask``), so it keeps exactly the label values it had, plus 0
(unlabelled) where rotation or zoom brings in pixels from outside the patch. Intensity steps
(hue and saturation as one colour matrix, gamma, overexposure, contrast, brightness, noise) touch
the image only. Gamma and overexposure model what happens to the raw image before per-image
normalisation, so a network trained with them copes with a differently exposed image: a gain that
saturates the brightest part of a channel becomes, after renormalisation, ``u -> min(u / c, 1)``
on the ``[0, 1]`` range (exact when the low percentile does not saturate), with ``c`` the
share of the range left unsaturated.
All randomness comes from torch's global RNG, so ``torch.manual_seed`` makes a run reproducible.
"""

from __future__ import annotations

import math

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..config import AugmentationConfig
from .normalisation import CENTRE, SPREAD


class Augmenter:
    """Randomly augments batches, each sample with its own draw.

    Parameters
    ----------
    config
        Strengths of each step; a strength of 0 (or ``False``) skips it. Brightness, contrast
        and noise are defined on the ``[0, 1]`` intensity range before standardisation.
    rgb
        Whether images are colour (3 channels, or 4 with alpha left untouched); only then are
        hue and saturation jittered.
    """

    def __init__(self, config: AugmentationConfig, *, rgb: bool) -> None:
        self.config = config
        self.rgb = rgb
        degrees, scale = float(config.rotation_degrees), float(config.scale)
        self._affine: v2.RandomAffine | None = None
        if degrees > 0 or scale > 0:
            self._affine = v2.RandomAffine(
                degrees=degrees,
                scale=(1 - scale, 1 + scale) if scale > 0 else None,
                interpolation=v2.InterpolationMode.BILINEAR,
                fill=None,  # grid_sample zero padding: image 0, mask 0 (unlabelled); faster than a fill
            )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch.

        Parameters
        ----------
        images
            float32 ``(B, C, P, P)`` normalised images (network units).
        labels
            int64 ``(B, P, P)`` labels, 0 = unlabelled.

        Returns
        -------
        images, labels
            New tensors of the same shapes and dtypes; the inputs are not modified.
        """
        if images.ndim != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(
                f"expected images (B, C, H, W) and labels (B, H, W); "
                f"got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        cfg = self.config
        images, labels = images.clone(), labels.clone()
        batch = images.shape[0]
        if cfg.flips or cfg.rot90:
            images, labels = self._dihedral(images, labels, cfg.flips, cfg.rot90)
        if self._affine is not None:
            for b in range(batch):
                image_b, label_b = self._affine(tv_tensors.Image(images[b]), tv_tensors.Mask(labels[b]))
                images[b] = image_b.as_subclass(torch.Tensor)
                labels[b] = label_b.as_subclass(torch.Tensor)
        if self.rgb and (cfg.hue > 0 or cfg.saturation > 0):
            images = self._colour(images)
        if cfg.gamma > 0 or cfg.overexposure > 0:
            images = self._exposure(images)
        if cfg.contrast > 0 or cfg.brightness > 0:
            # x -> (x - mean) * contrast + mean + shift, as one multiply-add per pixel.
            factor = _uniform(batch, 1 - cfg.contrast, 1 + cfg.contrast, images)
            shift = _uniform(batch, -cfg.brightness, cfg.brightness, images) / SPREAD
            offset = images.mean(dim=(1, 2, 3), keepdim=True) * (1 - factor) + shift
            images = torch.addcmul(offset, images, factor)
        if cfg.noise_std > 0:
            images.add_(torch.randn_like(images), alpha=cfg.noise_std / SPREAD)
        return images, labels

    @staticmethod
    def _dihedral(
        images: torch.Tensor, labels: torch.Tensor, flips: bool, rot90: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = images.shape[0]
        draws = torch.rand(2, batch) < 0.5 if flips else torch.zeros(2, batch, dtype=torch.bool)
        ks = torch.randint(0, 4, (batch,)) if rot90 else torch.zeros(batch, dtype=torch.int64)
        if images.shape[-1] != images.shape[-2]:
            ks = (ks // 2) * 2  # a quarter turn would change the shape of a non-square batch
        for b, (flip_x, flip_y, k) in enumerate(zip(draws[0].tolist(), draws[1].tolist(), ks.tolist())):
            dims = [d for d, flip in ((-1, flip_x), (-2, flip_y)) if flip]
            if not dims and not k:
                continue
            image_b, label_b = images[b], labels[b]
            if dims:
                image_b, label_b = image_b.flip(dims), label_b.flip(dims)
            if k:
                image_b = torch.rot90(image_b, k, dims=(-2, -1))
                label_b = torch.rot90(label_b, k, dims=(-2, -1))
            images[b], labels[b] = image_b, label_b
        return images, labels

    def _exposure(self, images: torch.Tensor) -> torch.Tensor:
        """Gamma (one per sample) and overexposure (half the samples, one cut per channel).

        Works on the ``[0, 1]`` range of the normalisation (low -> 0, high -> 1). Gamma bends only
        that range and keeps the tails outside it straight, so values below 0 or above 1 stay finite
        and ordered.
        """
        cfg = self.config
        batch, channels = images.shape[:2]
        units = images * SPREAD + CENTRE
        if cfg.gamma > 0:
            log_range = math.log1p(cfg.gamma)
            gammas = torch.exp(_uniform(batch, -log_range, log_range, images))
            inside = units.clamp(0, 1)
            units = inside.pow(gammas) + (units - inside)
        if cfg.overexposure > 0:
            chosen = (torch.rand(batch, 1, 1, 1) < 0.5).to(images.device)
            # log-uniform in [1 - overexposure, 1]: strong cuts (a channel nearly binary) are common
            keep = (1 - cfg.overexposure) ** torch.rand(batch, channels, 1, 1)
            exposed = overexpose(units, keep.to(device=images.device, dtype=images.dtype))
            units = torch.where(chosen, exposed, units)
        return (units - CENTRE) / SPREAD

    def _colour(self, images: torch.Tensor) -> torch.Tensor:
        """Hue rotation and saturation as one 3x3 matrix per sample.

        Both keep grey (r = g = b) fixed, so the matrix applies to normalised values directly,
        with no round trip through a clamped [0, 1] range. Saturation matches torchvision's
        ``adjust_saturation`` (blend with the same grey); hue rotates the chroma plane of YIQ
        by ``2 pi hue_factor`` (the linear counterpart of ``adjust_hue``), ~40x faster.
        """
        channels = images.shape[1]
        if channels not in (3, 4):
            raise ValueError(f"hue and saturation need RGB(A) images; got {channels} channels")
        cfg, batch = self.config, images.shape[0]
        angles = _uniform(batch, -cfg.hue, cfg.hue, images).flatten().double() * (2 * math.pi)
        sats = _uniform(batch, 1 - cfg.saturation, 1 + cfg.saturation, images).flatten().double()
        matrix = colour_matrix(angles, sats).to(device=images.device, dtype=images.dtype)
        images = images.clone()
        images[:, :3] = torch.einsum("bij,bjhw->bihw", matrix, images[:, :3])
        return images


_GREY = torch.tensor([0.2989, 0.587, 0.114], dtype=torch.float64) / 0.9999  # torchvision's grey, sum 1
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)


def colour_matrix(hue_angles: torch.Tensor, saturations: torch.Tensor) -> torch.Tensor:
    """Per-sample ``(B, 3, 3)`` RGB matrices: saturation blend, then hue rotation (radians) in YIQ."""
    batch = hue_angles.shape[0]
    eye = torch.eye(3, dtype=torch.float64)
    sat = saturations.view(-1, 1, 1)
    saturate = sat * eye + (1 - sat) * _GREY.view(1, 1, 3).expand(batch, 3, 3)
    cos, sin = torch.cos(hue_angles), torch.sin(hue_angles)
    rotate = eye.repeat(batch, 1, 1)
    rotate[:, 1, 1], rotate[:, 1, 2], rotate[:, 2, 1], rotate[:, 2, 2] = cos, -sin, sin, cos
    hue: torch.Tensor = torch.linalg.inv(_RGB_TO_YIQ) @ rotate @ _RGB_TO_YIQ
    return hue @ saturate


def overexpose(units: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A gain that saturates the top ``1 - keep`` of each channel's range, seen after renormalisation.

    ``units`` are on the normalisation's ``[0, 1]`` range; ``keep`` (broadcast per channel) is the
    share of that range left unsaturated. Raw ``x -> min(g x, max)`` followed by new percentiles
    is exactly ``u -> min(u / keep, 1)`` with ``keep = (max - g low) / (g (high - low))``.
    """
    return (units / keep).clamp(max=1)


def _uniform(batch: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    """One value per sample in ``[low, high]`` from the global CPU RNG, shaped to broadcast."""
    draw = torch.rand(batch, 1, 1, 1) * (high - low) + low
    return draw.to(device=like.device, dtype=like.dtype)
