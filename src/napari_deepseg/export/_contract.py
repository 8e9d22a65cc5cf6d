"""What every exported network promises, the test tile it is checked on, and the check itself.

An exported network takes the network input *after* normalisation, float32 (N, C, H, W), with H
and W multiples of the size divisor and at least twice it, and returns softmax probabilities
float32 (N, K, H, W): channel ``k - 1`` is class ``k``. The probabilities are exactly what
:meth:`~napari_deepseg.SegmentationModel.predict_proba` computes for a tile of that size.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..data.normalisation import CENTRE, INPUT_LIMIT, SPREAD

if TYPE_CHECKING:
    from ..segmentation_model import SegmentationModel

EXTRA = 'pip install "napari-deepseg[export]"'
# Largest difference of a probability between an exported network and the engine on the test tile;
# fp32 on the CPU agrees to ~1e-6, a wrong export (weights, normalisation, layout) by far more.
TOLERANCE = 1e-4
# Longest side of the test tile cut from the image (a multiple of every size divisor).
MAX_TILE = 256
# SegmentationNetwork.forward pads every side to at least this many size divisors.
MIN_DIVISORS = 2


class ExportError(ValueError):
    """The export was refused or its output differs from the engine's; nothing was written."""


class MissingExportDependencyError(ImportError):
    """An optional package the export format needs is not installed; the message names the extra."""


def require(what: str, modules: tuple[str, ...]) -> None:
    """Raise :class:`MissingExportDependencyError` naming ``pip install "napari-deepseg[export]"``
    when one of ``modules`` cannot be imported."""
    missing = [m for m in modules if not _importable(m)]
    if missing:
        raise MissingExportDependencyError(
            f"exporting to {what} needs {', '.join(missing)}, which is not installed; "
            f"install the export extra: {EXTRA}"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package of a dotted name is missing
        return False


class ProbabilityNetwork(nn.Module):
    """The trained network followed by the softmax over classes: what every export holds."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities: torch.Tensor = self.network(x).softmax(dim=1)
        return probabilities


@dataclass(frozen=True)
class InputContract:
    """Sizes an exported network accepts: ``min_size + n * size_divisor`` per side, n >= 0."""

    size_divisor: int
    min_size: int

    def check(self, height: int, width: int) -> None:
        for name, n in (("height", height), ("width", width)):
            if n < self.min_size or n % self.size_divisor:
                raise ExportError(
                    f"the exported network needs a {name} that is a multiple of {self.size_divisor} "
                    f"and at least {self.min_size}, got {n}"
                )


def input_contract(module: nn.Module) -> InputContract:
    divisor = int(getattr(module, "size_divisor", 32))
    return InputContract(divisor, MIN_DIVISORS * divisor)


def cpu_network(model: SegmentationModel) -> ProbabilityNetwork:
    """A CPU copy of the model's network with the softmax, in eval mode; the model is untouched."""
    return ProbabilityNetwork(copy.deepcopy(model.module).cpu()).eval()


@dataclass(frozen=True)
class TestTile:
    """The tile every export is checked on (and the bioimage.io test tensors).

    Attributes
    ----------
    raw
        The image tile before normalisation, float32 (1, C, H, W).
    network_input
        ``raw`` normalised as prediction does it, float32 (1, C, H, W).
    probabilities
        The engine's ``predict_proba`` of ``raw`` (fp32, CPU), float32 (1, K, H, W).
    """

    __test__ = False  # not a pytest class

    raw: np.ndarray
    network_input: np.ndarray
    probabilities: np.ndarray


def make_test_tile(
    model: SegmentationModel, image: Any = None, *, channel_axis: int | None = None
) -> TestTile:
    """Cut the centre (at most ``MAX_TILE`` per side, rounded down to the contract) of the first
    plane of ``image``, or of a bundled / synthetic image with the model's channels, and predict it."""
    from ..prediction import PredictionOptions, predict_probabilities

    contract = input_contract(model.module)
    if image is None:
        image, channel_axis = default_image(model.in_channels)
    plane = np.asarray(model.view(image, channel_axis).data[0], dtype=np.float32)  # (C, H, W)
    sides = []
    for name, n in zip(("height", "width"), plane.shape[1:]):
        side = min(n, MAX_TILE) // contract.size_divisor * contract.size_divisor
        if side < contract.min_size:
            raise ExportError(
                f"the export's test image needs a {name} of at least {contract.min_size} pixels, got {n}"
            )
        sides.append(side)
    (h, w), (height, width) = sides, plane.shape[1:]
    top, left = (height - h) // 2, (width - w) // 2
    raw = np.ascontiguousarray(plane[None, :, top : top + h, left : left + w])
    view = model.view(raw[0], channel_axis=0)
    normalisation = model.normalisation.for_image(view.data)
    network_input = normalisation.apply(raw)
    engine = cpu_network(model).network
    options = PredictionOptions(precision="fp32")
    probabilities = predict_probabilities(engine, view, normalisation, model.num_classes, options)
    return TestTile(raw, network_input, probabilities[None].astype(np.float32))


def default_image(channels: int) -> tuple[np.ndarray, int | None]:
    """A bundled sample with ``channels`` channels (1: fluorescence, 3: H&E), else smooth noise."""
    from ..sample_data import load_sample

    if channels in (1, 3):
        image, _ = load_sample("fluorescence" if channels == 1 else "he")
        return image, None if channels == 1 else -1
    noise = np.random.default_rng(0).random((channels, MAX_TILE, MAX_TILE))
    smooth = np.fft.irfft2(np.fft.rfft2(noise) * _low_pass(MAX_TILE), s=noise.shape[1:])
    return smooth.astype(np.float32), 0


def _low_pass(size: int) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.exp(-(fy**2 + fx**2) / (2 * 0.03**2))


def check_outputs(what: str, outputs: np.ndarray, tile: TestTile) -> None:
    """Raise :class:`ExportError` unless ``outputs`` equal the engine's probabilities on the tile."""
    expected = tile.probabilities
    if outputs.shape != expected.shape:
        raise ExportError(f"the {what} export gives shape {outputs.shape}, the engine {expected.shape}")
    difference = float(np.max(np.abs(outputs.astype(np.float64) - expected)))
    if not difference <= TOLERANCE:  # also refuses NaN
        raise ExportError(
            f"the {what} export does not match the engine on the test tile: probabilities differ by "
            f"up to {difference:.3g} (tolerance {TOLERANCE}); nothing was written"
        )


def export_metadata(model: SegmentationModel) -> dict[str, Any]:
    """What an exported file records about its model, its input and its output (JSON-ready)."""
    from .. import __version__

    contract = input_contract(model.module)
    norm = model.normalisation
    return {
        "format": "napari-deepseg export",
        "napari_deepseg_version": __version__,
        "torch_version": torch.__version__,
        "architecture": model.architecture,
        "encoder": model.encoder,
        "num_classes": model.num_classes,
        "class_names": list(model.class_names),
        "in_channels": model.in_channels,
        "input": {
            "axes": "bcyx",
            "dtype": "float32",
            "size_divisor": contract.size_divisor,
            "min_size": contract.min_size,
            "normalisation": norm.to_dict(),
            "how_to_normalise": normalisation_text(model),
        },
        "output": {
            "axes": "bcyx",
            "dtype": "float32",
            "values": "softmax probabilities; channel k-1 is class k (class_names[k-1])",
        },
    }


def normalisation_text(model: SegmentationModel) -> str:
    """How to turn an image into the exported network's input, in one paragraph."""
    norm = model.normalisation
    low_p, high_p = norm.percentiles
    if norm.mode == "per_image":
        bounds = (
            f"low and high are the {low_p:g} and {high_p:g} percentiles of each channel over the "
            "whole image (per image, per channel)"
        )
    else:
        bounds = (
            f"low = {list(norm.low)} and high = {list(norm.high)} per channel (fixed, measured in training)"
        )
    return (
        f"per channel: v = ((x - low) / (high - low) - {CENTRE}) / {SPREAD}, i.e. 4 * (x - low) / "
        f"(high - low) - 2, then clipped to [-{INPUT_LIMIT:g}, {INPUT_LIMIT:g}]; {bounds}. "
        "A channel with high == low uses high = low + 1."
    )
