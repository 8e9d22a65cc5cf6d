"""``napari-deepseg predict``: segment an image with a trained model (streamed into a ``.tif``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..image_io import read_image, write_image


def add_parser(sub: Any) -> None:
    from ..prediction import TilingOptions

    p = sub.add_parser("predict", help="segment an image with a trained model")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path, help="labels file (.tif or .png)")
    p.add_argument(
        "--min-probability",
        type=float,
        default=0.0,
        help="pixels whose best class is less probable than this stay 0 (default 0)",
    )
    p.add_argument("--probabilities", type=Path, help="also write float32 probabilities (K, ...) as TIFF")
    tiling = TilingOptions()
    p.add_argument("--tile-size", type=int, default=tiling.tile_size)
    p.add_argument("--overlap", type=int, default=tiling.overlap)
    p.add_argument("--batch-size", type=int, default=tiling.batch_size, help="tiles per forward pass")
    p.add_argument("--device", default=None, help="default: the model's device (CPU) ")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--channel-axis", type=int)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..image_io import TIFF_SUFFIXES, create_labels_file
    from ..prediction import CompactProbabilities, apply_threshold, label_dtype
    from ..segmentation_model import SegmentationModel

    model = SegmentationModel.load(args.model)
    image = read_image(args.image)
    options = dict(
        channel_axis=args.channel_axis,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
    )
    _check_before_running(args, model, image, options)
    with tqdm(desc="predicting", unit="tile", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if args.probabilities:
            probabilities = model.predict_proba(image, progress=progress, **options)
            labels = apply_threshold(
                CompactProbabilities.from_probabilities(probabilities), args.min_probability
            )
            write_image(args.output, labels)
        elif args.output.suffix.lower() in TIFF_SUFFIXES:
            # Streamed into a memory-mapped TIFF: images larger than memory work.
            view = model.view(image, args.channel_axis)
            streamed = create_labels_file(args.output, view.labels_shape, label_dtype(model.num_classes))
            try:
                model.predict(
                    image, min_probability=args.min_probability, out=streamed, progress=progress, **options
                )
            except BaseException:  # Ctrl+C, out of memory: no half-written labels file is left
                del streamed
                args.output.unlink(missing_ok=True)
                raise
            if isinstance(streamed, np.memmap):  # what create_labels_file returns (typed as its base)
                streamed.flush()
            labels = streamed
        else:
            labels = model.predict(image, min_probability=args.min_probability, progress=progress, **options)
            write_image(args.output, labels)
    print(
        f"wrote labels {labels.shape} with classes {class_counts(labels, model.class_names)} to {args.output}"
    )
    if args.probabilities:
        write_image(args.probabilities, probabilities)
        print(f"wrote probabilities {probabilities.shape} to {args.probabilities}")
    return 0


def _check_before_running(args: argparse.Namespace, model: Any, image: Any, options: dict[str, Any]) -> None:
    """What can be checked before anything runs or is written, so that a bad image or option
    prints its one line and leaves no file behind."""
    from ..data.normalisation import finite_sample
    from ..image_io import TIFF_SUFFIXES
    from ..prediction import PredictionOptions

    suffix = args.output.suffix.lower()
    if suffix not in (*TIFF_SUFFIXES, ".png"):
        raise ValueError(f"unsupported output format {suffix!r} for {str(args.output)!r}; use .tif or .png")
    if args.probabilities and args.probabilities.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"--probabilities are written as TIFF (.tif), got {str(args.probabilities)!r}")
    if not 0 <= args.min_probability <= 1:  # also refuses NaN
        raise ValueError(f"--min-probability must be in [0, 1], got {args.min_probability}")
    view = model.view(image, args.channel_axis)
    if suffix == ".png" and len(view.labels_shape) != 2:
        raise ValueError(f"PNG output holds 2D labels only; use .tif for labels of shape {view.labels_shape}")
    if view.data.dtype.kind == "f":
        finite_sample(view.data)  # NaN / inf, on the pixels the normalisation reads
    PredictionOptions().replace(**{k: v for k, v in options.items() if k not in ("channel_axis", "device")})
    if args.device is not None:
        model.to(args.device)


def class_counts(labels: np.ndarray, names: Sequence[str]) -> str:
    """ "background: 60.0%, nucleus: 40.0%" (and the unclassified share, if any)."""
    counts = np.zeros(len(names) + 1, np.int64)
    flat = labels.reshape(-1)
    for start in range(0, flat.size, 1 << 24):  # in chunks: bincount makes an int64 copy
        counts += np.bincount(flat[start : start + (1 << 24)], minlength=len(names) + 1)
    parts = [f"{names[k - 1]}: {counts[k] / labels.size:.1%}" for k in range(1, len(names) + 1)]
    if counts[0]:
        parts.append(f"unclassified: {counts[0] / labels.size:.1%}")
    return ", ".join(parts)
