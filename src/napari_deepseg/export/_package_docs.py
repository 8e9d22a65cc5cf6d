"""The human side of a bioimage.io package: citations, the README and the cover image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._contract import InputContract, normalisation_text

if TYPE_CHECKING:
    from ..segmentation_model import SegmentationModel

# (text, DOI) of the paper behind each architecture and encoder family.
ARCHITECTURE_PAPERS: dict[str, tuple[str, str]] = {
    "unet": (
        "Ronneberger, Fischer & Brox (2015). U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015.",
        "10.1007/978-3-319-24574-4_28",
    ),
    "deeplabv3plus": (
        "Chen, Zhu, Papandreou, Schroff & Adam (2018). Encoder-Decoder with Atrous Separable "
        "Convolution for Semantic Image Segmentation. ECCV 2018.",
        "10.1007/978-3-030-01234-2_49",
    ),
    "fcn8s": (
        "Long, Shelhamer & Darrell (2015). Fully Convolutional Networks for Semantic Segmentation. "
        "CVPR 2015.",
        "10.1109/CVPR.2015.7298965",
    ),
}
ENCODER_PAPERS: dict[str, tuple[str, str]] = {
    "resnet": (
        "He, Zhang, Ren & Sun (2016). Deep Residual Learning for Image Recognition. CVPR 2016.",
        "10.1109/CVPR.2016.90",
    ),
    "vgg": (
        "Simonyan & Zisserman (2015). Very Deep Convolutional Networks for Large-Scale Image "
        "Recognition. ICLR 2015.",
        "10.48550/arXiv.1409.1556",
    ),
}


def papers(architecture: str, encoder: str) -> list[tuple[str, str]]:
    """(text, DOI) of the architecture's paper (if known) and of its encoder family's."""
    found = [ARCHITECTURE_PAPERS[architecture]] if architecture in ARCHITECTURE_PAPERS else []
    family = next((k for k in ENCODER_PAPERS if encoder.startswith(k)), None)
    return found + ([ENCODER_PAPERS[family]] if family else [])


def readme(model: SegmentationModel, contract: InputContract, name: str, description: str) -> str:
    """README.md of the package: what the model does, its input and output, limits, validation."""
    from ..models import architecture_spec
    from ..training.events import ValidationMetrics

    display = architecture_spec(model.architecture).display_name
    last = next((r["validation"] for r in reversed(model.history) if r.get("validation")), None)
    if last:
        scores = ValidationMetrics.from_dict(last)
        ious = ", ".join(f"{n} {v:.3f}" for n, v in zip(model.class_names, scores.iou))
        validation = (
            f"The last validation during training gave an error rate of {scores.error_rate:.3f}, "
            f"IoU per class {ious} (mean {scores.mean_iou:.3f})."
        )
    else:
        validation = "No strokes were held out for validation during training, so no score was measured."
    classes = "\n".join(f"- channel {k}: class {k + 1}, {n}" for k, n in enumerate(model.class_names))
    refs = "\n".join(
        f"- {text} https://doi.org/{doi}" for text, doi in papers(model.architecture, model.encoder)
    )
    return f"""# {name}

{description}

Trained with [napari-deepseg](https://github.com/napari-deepseg/napari-deepseg) from painted
strokes: {model.summary()}.

## Network

{display} with a {model.encoder} encoder, {model.in_channels} input channel(s), {model.num_classes} classes.

## Input

`raw`: float32 (batch, channel, y, x); y and x of at least {contract.min_size} pixels and a
multiple of {contract.size_divisor} (`min {contract.min_size}, step {contract.size_divisor}`);
tile larger images. The pre-processing in `rdf.yaml` (scale_range, scale_linear, clip) turns the
raw image into the network input: {normalisation_text(model)}

Differences from napari-deepseg's own normalisation, all small: bioimage.io computes the
percentiles per 2D sample (napari-deepseg over a whole stack, and on a regular grid of 2 M
pixels per channel for larger images; a tool that tiles large images may compute them per
tile), and divides by `high - low + 1e-6` (napari-deepseg replaces a zero range by 1).

## Output

`probabilities`: float32 (batch, channel, y, x), the softmax probabilities of the classes, at
the input size:

{classes}

The label image is the arg-max over channels (plus one, as napari-deepseg numbers classes from 1).

## Weights

- `pytorch_state_dict`: needs `pip install napari-deepseg` (the architecture is
  `napari_deepseg.export.architecture.build_network`).
- `torchscript` (deepImageJ, Fiji, ilastik) and `onnx` (ilastik, any onnxruntime), converted
  from it; the three were checked against napari-deepseg on the test tile when exported.

## Validation

{validation} The training labels were sparse strokes, so validation scores are measured on
held-out stroke pixels, not on dense ground truth: check the model on annotated images of your
own before relying on it. The test tensors (`test_input.npy`, `test_output.npy`) reproduce napari-deepseg's
prediction of the test tile.

## Limits

The network saw only the images it was trained on; images of another modality, magnification,
stain or intensity range may need retraining. 2D only (a stack is segmented plane by plane).

## References

{refs}
"""


def write_cover(path: Path, raw: np.ndarray, probabilities: np.ndarray) -> None:
    """A 2:1 PNG: the test tile (left) and its predicted classes blended over it (right)."""
    import imageio.v3 as iio
    from matplotlib import colormaps  # no pyplot: no GUI backend is touched

    image = raw[0]  # (C, H, W)
    shown = image[:3] if image.shape[0] >= 3 else image[:1].repeat(3, axis=0)
    low, high = np.percentile(shown, [1, 99.8])
    grey = np.clip((shown - low) / max(high - low, 1e-12), 0, 1).transpose(1, 2, 0)
    colours = colormaps["tab10"](np.arange(10))[:, :3][np.argmax(probabilities[0], axis=0) % 10]
    overlay = 0.5 * grey + 0.5 * colours
    h, w = grey.shape[:2]
    # Square halves of the shorter side keep the 2:1 ratio bioimage.io asks of covers.
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = (slice(top, top + side), slice(left, left + side))
    pair = np.concatenate([grey[crop], overlay[crop]], axis=1)
    iio.imwrite(path, (pair * 255).round().astype(np.uint8))
