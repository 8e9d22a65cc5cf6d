"""Argument groups and helpers that several commands share."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import AugmentationConfig, TrainingConfig
from ..models import available_architectures

if TYPE_CHECKING:
    from ..training import Trainer
    from ..training.tensorboard import TensorBoardLogger


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The ``TrainingConfig`` fields as options, with its defaults."""
    defaults = TrainingConfig()
    p.add_argument("--architecture", choices=available_architectures(), default=defaults.architecture)
    p.add_argument("--encoder", default=None, help="encoder name (default: the architecture's default)")
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights")
    p.add_argument("--pretrained-weights", type=Path, help="local file with pretrained encoder weights")
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help=f"stop after this many iterations (default {defaults.iterations}, none with "
        "--minutes; "
        "0: no limit, train until Ctrl+C)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop after this many minutes of training (or at --iterations, if given and first)",
    )
    p.add_argument(
        "--normalisation",
        default=defaults.normalisation,
        choices=("per_image", "dataset"),
        help="per_image: each image by its own percentiles (default); dataset: the training "
        "images' bounds for every image, when absolute intensity carries the class",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=defaults.ema_decay,
        help="decay of the averaged weights that are saved (0: keep the last weights)",
    )
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--patch-size", type=int, default=defaults.patch_size)
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    p.add_argument("--optimizer", default=defaults.optimizer.value, choices=("adam", "adamw", "sgd"))
    p.add_argument("--schedule", default=defaults.schedule.value, choices=("constant", "cosine", "step"))
    p.add_argument("--loss", default=defaults.loss.value, choices=("ce", "ce_dice"))
    p.add_argument("--class-balancing", action="store_true")
    p.add_argument("--no-augmentation", action="store_true")
    p.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--precision", default=defaults.precision.value, choices=("auto", "fp32", "bf16"))
    p.add_argument("--channel-axis", type=int, help="axis of the image holding channels")
    p.add_argument("--class-names", help="comma-separated names for classes 1..K")


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The ``TrainingConfig`` of the options added by :func:`add_training_options`."""
    return TrainingConfig(
        architecture=args.architecture,
        encoder=args.encoder,
        pretrained=not args.no_pretrained,
        iterations=(args.iterations or None)
        if args.iterations is not None or args.minutes
        else TrainingConfig().iterations,
        max_minutes=args.minutes,
        normalisation=args.normalisation,
        ema_decay=args.ema_decay,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        schedule=args.schedule,
        loss=args.loss,
        class_balancing=args.class_balancing,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        augmentation=AugmentationConfig.disabled() if args.no_augmentation else AugmentationConfig(),
    )


def run_training(trainer: Trainer, description: str, logger: TensorBoardLogger | None = None) -> None:
    """Run ``trainer`` to its end with a progress bar on stderr; Ctrl+C ends a run without a limit.

    ``logger`` gets every record and is closed at the end, however the run ends.
    """
    from tqdm import tqdm

    config = trainer.config
    if config.until_stopped:
        print("training until interrupted (Ctrl+C saves the model so far)", file=sys.stderr)
    # With a time limit the bar counts thousandths of the run, whichever limit is ahead.
    by_time = config.max_minutes is not None
    total = 1000 if by_time else config.iterations
    main = trainer.rank == 0  # under torchrun, rank 0 alone shows the progress and logs it
    unit = "‰" if by_time else "it"
    with tqdm(total=total, desc=description, unit=unit, file=sys.stderr, disable=not main) as bar:
        records = trainer.run() if logger is None or not main else logger.follow(trainer.run(), trainer)
        try:
            for record in records:
                postfix = {
                    "it": record.iteration,
                    "loss": f"{record.loss:.4f}",
                    "err": f"{record.error_rate:.3f}",
                }
                if record.validation is not None:
                    postfix["val_mIoU"] = f"{record.validation.mean_iou:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(round(1000 * record.fraction_done) - bar.n if by_time else 1)
        except KeyboardInterrupt:
            if not config.until_stopped:
                raise
            print("\nstopped; saving the model so far", file=sys.stderr)
        finally:
            if logger is not None:
                logger.close()  # the event file complete, also after Ctrl+C
