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
    p.add_argument(
        "--tensorboard",
        type=Path,
        metavar="DIR",
        help="log loss, error rate, learning rate, validation metrics and preview images to this "
        'TensorBoard folder (needs pip install "napari-deepseg[tensorboard]")',
    )
    p.add_argument(
        "--tensorboard-preview-every",
        type=int,
        default=100,
        metavar="N",
        help="with --tensorboard: a preview image every N iterations (0: none; default 100)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..segmentation_model import SegmentationModel
    from ..training import Trainer
    from ..training.history import write_csv
    from ..training.tensorboard import TensorBoardLogger

    if len(args.image) != len(args.labels):
        raise ValueError(
            f"give one --labels per --image ({len(args.image)} images, {len(args.labels)} labels)"
        )
    images = [read_image(p) for p in args.image]
    labels = [read_image(p) for p in args.labels]
    logger = None  # made before the trainer: a missing tensorboard package fails before training
    if args.tensorboard:
        try:
            logger = TensorBoardLogger(
                args.tensorboard,
                preview_every=args.tensorboard_preview_every,
                preview_image=images[0],
                channel_axis=args.channel_axis,
            )
        except ImportError as err:  # one line naming the extra, not a traceback
            raise ValueError(str(err)) from err
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
    run_training(trainer, f"training {trainer.model.architecture}", logger=logger)
    if trainer.rank != 0:  # under torchrun, rank 0 alone writes the model and the history
        return 0
    path = trainer.model.save(args.output)
    print(f"saved {trainer.model.summary()} to {path}")
    if args.history:
        print(f"wrote the training history to {write_csv(args.history, trainer.model.history)}")
    return 0
