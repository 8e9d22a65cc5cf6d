"""``napari-deepseg train``: train (or continue) a model on image/labels pairs and save it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..image_io import read_image
from ._options import add_training_options, config_from_args, run_training


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on image/labels pairs")
    p.add_argument("--image", action="append", required=True, type=Path, help="image file (repeatable)")
    p.add_argument(
        "--labels",
        action="append",
        required=True,
        type=Path,
        help="labels file for the preceding --image: 0 unlabelled, 1..K classes",
    )
    p.add_argument("--output", required=True, type=Path, help="model file to write")
    add_training_options(p)
    p.add_argument(
        "--continue-from",
        type=Path,
        metavar="MODEL",
        help="continue training this model instead of starting a new one",
    )
    p.add_argument(
        "--history",
        type=Path,
        metavar="CSV",
        help="also write the training history (one row per iteration) as CSV",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..segmentation_model import SegmentationModel
    from ..training import Trainer
    from ..training.history import write_csv

    if len(args.image) != len(args.labels):
        raise ValueError(
            f"give one --labels per --image ({len(args.image)} images, {len(args.labels)} labels)"
        )
    images = [read_image(p) for p in args.image]
    labels = [read_image(p) for p in args.labels]
    previous = SegmentationModel.load(args.continue_from) if args.continue_from else None
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    if names is not None and not all(names):
        raise ValueError(f"--class-names needs a name for every class, got {args.class_names!r}")
    trainer = Trainer(
        images,
        labels,
        config_from_args(args),
        channel_axis=args.channel_axis,
        class_names=names,
        model=previous,
        weights_path=args.pretrained_weights,
    )
    run_training(trainer, f"training {trainer.model.architecture}")
    path = trainer.model.save(args.output)
    print(f"saved {trainer.model.summary()} to {path}")
    if args.history:
        print(f"wrote the training history to {write_csv(args.history, trainer.model.history)}")
    return 0
