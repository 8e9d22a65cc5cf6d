"""A trained network together with everything needed to use it on new images."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._device import resolve_device
from .config import TrainingConfig, check_device
from .data.layout import SliceView, to_slices
from .data.normalisation import DATASET, Normalisation, finite_sample
from .prediction import (
    CompactProbabilities,
    PredictionOptions,
    label_dtype,
    predict_compact,
    predict_labels,
    predict_probabilities,
)

REGION_CONTEXT = 96  # pixels around a predicted region that the network also sees (3 tiles of 32)


def _with_keywords(options: PredictionOptions | None, keywords: dict[str, Any]) -> PredictionOptions:
    # The keywords are the convenience form (``tile_size=512``) of single option fields.
    if options is not None and not isinstance(options, PredictionOptions):
        raise TypeError(f"options must be PredictionOptions (or None), got {type(options).__name__}")
    return (options or PredictionOptions()).replace(**keywords)


def _check_region(region: Any) -> tuple[int, int, int, int]:
    values = tuple(region) if isinstance(region, (tuple, list, np.ndarray)) else ()
    if len(values) != 4 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
        raise ValueError(f"region must be four finite numbers (y0, y1, x0, x1), got {region!r}")
    y0, y1, x0, x1 = (int(v) for v in values)
    return y0, y1, x0, x1


def _check_out(out: Any) -> None:
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(f"out must be an array (numpy, memmap, zarr), got {type(out).__name__}")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out is read-only; pass a writable array")


def _region_view(view: SliceView, region: tuple[int, int, int, int]) -> tuple[SliceView, tuple[slice, slice]]:
    """The box plus its context as a view of its own, and where the box lies inside it."""
    if view.num_slices != 1:
        raise ValueError("region prediction needs a single-plane image; pass the plane")
    height, width = view.spatial_shape
    y0, y1, x0, x1 = _check_region(region)
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y1, height), min(x1, width)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"region {tuple(region)} does not overlap the image of size {height} x {width}")
    top, left = max(y0 - REGION_CONTEXT, 0), max(x0 - REGION_CONTEXT, 0)
    bottom, right = min(y1 + REGION_CONTEXT, height), min(x1 + REGION_CONTEXT, width)
    crop = SliceView(view.data[:, :, top:bottom, left:right], (), view.channel_axis)
    return crop, (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


class SegmentationModel:
    """A network plus its metadata: architecture, classes, input channels, normalisation, history.

    Parameters
    ----------
    module
        The network; maps (N, C, H, W) to logits (N, K, H, W).
    architecture, encoder
        Registry names, used to rebuild the network when loading.
    num_classes
        K; class ``k`` of the labels is output channel ``k - 1``.
    normalisation
        Per-channel intensity normalisation measured on the training images.
    class_names
        Optional names for classes 1..K.
    config
        The training configuration of the latest run.
    history
        One dict per finished training iteration (see ``TrainingProgress.to_dict``).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        architecture: str,
        encoder: str,
        num_classes: int,
        normalisation: Normalisation,
        class_names: Sequence[str] | None = None,
        config: TrainingConfig | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.module = module
        self.architecture = architecture
        self.encoder = encoder
        self.num_classes = num_classes
        self.normalisation = normalisation
        self.class_names = (
            tuple(class_names) if class_names else tuple(f"class {k}" for k in range(1, num_classes + 1))
        )
        self.config = config or TrainingConfig(architecture=architecture, encoder=encoder)
        self.history = list(history or [])
        # True while a Trainer's run() is updating this model's weights (in another thread, maybe):
        # predict from a copy then.
        self.training_in_progress = False

    @property
    def in_channels(self) -> int:
        return self.normalisation.in_channels

    @property
    def iterations_trained(self) -> int:
        return int(self.history[-1]["iteration"]) if self.history else 0

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def summary(self) -> str:
        """One line for people: architecture, classes, channels and training so far."""
        from .training.history import describe  # not at the top: training imports this module

        return (
            f"{self.architecture} ({self.encoder}), {self.num_classes} classes "
            f"[{', '.join(self.class_names)}], {self.in_channels} input channel(s), "
            f"{describe(self.history)}"
        )

    def view(self, image: Any, channel_axis: int | None = None) -> SliceView:
        """The image as (S, C, H, W) slices with the channel handling used in training."""
        shape = tuple(np.shape(image))
        dtype = np.dtype(image.dtype) if hasattr(image, "dtype") else np.asarray(image).dtype
        if dtype.kind not in "biuf":
            raise TypeError(f"image must be numeric (integer or float); got dtype {dtype}")
        if channel_axis is None and self.in_channels == 1 and len(shape) == 3 and shape[-1] in (3, 4):
            raise ValueError(
                f"the model was trained on 1-channel images but this image looks like RGB(A) "
                f"(shape {shape}); a stack of grey slices must have its stack axis first"
            )
        view = to_slices(image, channel_axis=channel_axis, in_channels=self.in_channels)
        channels = view.data.shape[1]
        if channels != self.in_channels:
            raise ValueError(
                f"the model was trained on images with {self.in_channels} channel(s) but this image "
                f"has {channels} (shape {tuple(np.shape(image))})"
            )
        if self.normalisation.mode == DATASET and view.data.dtype.kind == "f":
            finite_sample(view.data)  # per_image bounds check the same pixels when they are measured
        return view

    def to(self, device: str | torch.device) -> SegmentationModel:
        """Move the network to ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

        Returns the model itself, as ``nn.Module.to`` does.
        """
        if not isinstance(device, torch.device):
            check_device(device)
        self.module.to(resolve_device(device))
        return self

    def predict_proba(
        self,
        image: Any,
        options: PredictionOptions | None = None,
        *,
        channel_axis: int | None = None,
        **keywords: Any,
    ) -> np.ndarray:
        """Per-class probabilities, float32 of shape (K, *spatial): (K, H, W) for a 2D image,
        (K, Z, H, W) for a stack (predicted slice by slice). Tiled with overlap and smooth blending.

        ``options`` say how the network runs (:class:`PredictionOptions`: tiling, device,
        precision, progress and stop callbacks); keywords change single fields of it, e.g.
        ``tile_size=512, precision="fp32"``. With a ``device`` the network is first moved there
        (:meth:`to`) and stays there.
        """
        view = self.view(image, channel_axis)
        options = _with_keywords(options, keywords)
        if options.device is not None:
            self.to(options.device)
        return predict_probabilities(self.module, view, self.normalisation, self.num_classes, options)

    def predict_compact(
        self,
        image: Any,
        options: PredictionOptions | None = None,
        *,
        channel_axis: int | None = None,
        region: tuple[int, int, int, int] | None = None,
        image_normalisation: Normalisation | None = None,
        out: CompactProbabilities | None = None,
        **keywords: Any,
    ) -> CompactProbabilities:
        """Like :meth:`predict_proba` but returns the compact (2 bytes/pixel) result that
        :func:`apply_threshold` re-thresholds instantly; never holds the float probabilities whole.

        ``region=(y0, y1, x0, x1)`` predicts only that box of a single-plane image (the network
        sees up to ``REGION_CONTEXT`` pixels around it) and returns the box's result; the
        normalisation is still that of the whole image. ``image_normalisation`` (from
        ``model.normalisation.for_image(model.view(image).data)``) skips measuring the image's
        bounds again when the same image is predicted repeatedly.

        ``out``: a :class:`CompactProbabilities` of two arrays of the labels' shape (e.g. two zarr
        arrays: ``best_class`` of :func:`label_dtype`, ``best_probability`` uint8) that receive
        the result band by band, for images larger than memory; it is returned. Not with ``region``.
        """
        if out is not None and region is not None:
            raise ValueError("out and region cannot be combined: predict the region in memory")
        view = self.view(image, channel_axis)
        options = _with_keywords(options, keywords)
        if options.device is not None:
            self.to(options.device)
        normalisation = image_normalisation or self.normalisation.for_image(view.data)
        if region is None:
            return predict_compact(self.module, view, normalisation, self.num_classes, options, out)
        crop_view, inner = _region_view(view, region)
        full = predict_compact(self.module, crop_view, normalisation, self.num_classes, options)
        return CompactProbabilities(full.best_class[inner], full.best_probability[inner], self.num_classes)

    def predict(
        self,
        image: Any,
        options: PredictionOptions | None = None,
        *,
        min_probability: float = 0.0,
        out: Any = None,
        channel_axis: int | None = None,
        client: Any = None,
        **keywords: Any,
    ) -> np.ndarray:
        """Labels 0..K: the most probable class where its probability reaches ``min_probability``.

        ``out``: an integer array of the image's spatial shape to write the labels into band by
        band (numpy, ``np.memmap``, a memory-mapped TIFF, zarr), for images larger than memory;
        it is returned. ``options`` and keywords as for :meth:`predict_proba`. ``client``: a
        ``distributed.Client`` whose workers predict the image block by block, with the same
        labels (:func:`napari_deepseg.cluster.predict_on_cluster`; a zarr ``out`` is written by them).
        """
        view = self.view(image, channel_axis)
        options = _with_keywords(options, keywords)
        if client is not None:
            from .cluster import predict_on_cluster

            return predict_on_cluster(  # type: ignore[no-any-return]
                self, image, client, options=options, min_probability=min_probability, out=out,
                channel_axis=channel_axis,
            )  # fmt: skip
        if options.device is not None:
            self.to(options.device)
        if out is None:
            out = np.empty(view.labels_shape, label_dtype(self.num_classes))
        _check_out(out)
        labels: np.ndarray = predict_labels(
            self.module, view, self.normalisation, self.num_classes, out, min_probability, options
        )
        return labels

    def save(self, path: str | Path) -> Path:
        """Write one self-describing file (safetensors weights + JSON metadata, no pickle)."""
        from .model_file import save_model

        return save_model(self, path)

    def export(self, path: str | Path, format: str, **options: Any) -> Path:  # noqa: A002
        """Write the network for other tools: ``"torchscript"``, ``"onnx"`` or ``"bioimageio"``
        (a zipped bioimage.io model package), checked against :meth:`predict_proba` first.

        Options (``image``, ``authors``, ``license``, ...) and the input each format takes:
        :func:`napari_deepseg.export.export_model`.
        """
        from .export import export_model

        return export_model(self, path, format, **options)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> SegmentationModel:
        """Read a file written by :meth:`save`; never executes code from the file."""
        from .model_file import load_model

        return load_model(path, device=device)
