"""``napari-deepseg export``: write a trained model as TorchScript, ONNX or a bioimage.io package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMATS = ("torchscript", "onnx", "bioimageio")  # the keys of export.FORMATS, without importing torch


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model (TorchScript .pt, ONNX .onnx, bioimage.io .zip)",
        description="Export a trained model for deepImageJ, ilastik, Fiji or onnxruntime; the "
        "export is checked against napari-deepseg on a test tile before it is written.",
    )
    p.add_argument("--model", required=True, type=Path)
    # Not argparse choices: a bad format is one "error:" line like every other bad input.
    p.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--output", required=True, type=Path, help=".pt (TorchScript), .onnx, .zip (bioimage.io)")
    p.add_argument("--image", type=Path, help="test image (default: a bundled sample or smooth noise)")
    p.add_argument("--channel-axis", type=int)
    p.add_argument("--author", action="append", help="bioimage.io author name (repeatable)")
    p.add_argument("--license", default="BSD-3-Clause", help="bioimage.io license, an SPDX id")
    p.add_argument("--name", help="bioimage.io model name")
    p.add_argument("--description", help="bioimage.io model description")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..image_io import read_image
    from ..segmentation_model import SegmentationModel

    if args.format not in FORMATS:
        raise ValueError(f"unknown export format {args.format!r}; choose one of {', '.join(FORMATS)}")
    model = SegmentationModel.load(args.model)
    try:
        path = model.export(
            args.output,
            args.format,
            image=None if args.image is None else read_image(args.image),
            channel_axis=args.channel_axis,
            authors=args.author,
            license=args.license,
            name=args.name,
            description=args.description,
        )
    except ImportError as err:  # the export extra is missing: its message says what to install
        print(f"napari-deepseg export: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.format} export of {model.summary()} to {path}")
    return 0
