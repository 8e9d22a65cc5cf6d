"""``napari-deepseg demo``: the bundled sample in napari, ready to train; ``--headless`` trains,
predicts and writes the results instead."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..config import TrainingConfig
from ..image_io import write_image
from ..models import available_architectures
from ._options import run_training

CLASS_NAMES = ("background", "nucleus")
PRESET = dict(patch_size=128, batch_size=4, validation_fraction=0.0)  # short, in both modes


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="the bundled sample in napari, ready to train (--headless: train and write the results)"
    )
    p.add_argument(
        "--headless",
        action="store_true",
        help="no viewer: train, predict and write files (default: open napari, ready to train)",
    )
    p.add_argument("--sample", choices=("fluorescence", "he"), default="fluorescence")
    p.add_argument("--output", type=Path, default=Path("deepseg-demo"), help="folder for the results")
    # 300: at 150 the tile's IoU was a lottery between seeds (docs/benchmarks.md, section 0).
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--architecture", choices=available_architectures(), default="unet")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(architecture=args.architecture, iterations=args.iterations, device=args.device, **PRESET)


def run(args: argparse.Namespace) -> int:
    if not args.headless:
        return _in_napari(args)
    import torch

    from .. import sample_data
    from ..prediction import apply_threshold
    from ..training import Trainer
    from ..training.history import write_csv
    from ..training.losses import confusion_matrix, iou_and_dice
    from .plot import plot_history

    image, strokes = (
        sample_data.load_fluorescence_sample()
        if args.sample == "fluorescence"
        else sample_data.load_he_sample()
    )
    trainer = Trainer(image, strokes, TrainingConfig(**_settings(args)), class_names=CLASS_NAMES)
    started = time.perf_counter()
    run_training(trainer, f"training {args.architecture} on the {args.sample} sample")
    seconds = time.perf_counter() - started
    model = trainer.model
    probabilities = model.predict_proba(image)
    labels = apply_threshold(probabilities, 0.0)

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.safetensors")
    write_image(out / "labels.tif", labels)
    write_image(out / "probabilities.tif", probabilities)
    write_csv(out / "loss.csv", model.history)
    plotted = plot_history(out / "loss.png", model.history)
    truth = sample_data.load_sample_mask(args.sample)
    # every pixel "painted" with the truth (1 background, 2 nucleus) against the predicted 0 / 1
    painted, predicted = torch.from_numpy(truth + 1), torch.from_numpy(labels == 2)
    iou, _ = iou_and_dice(confusion_matrix(painted, predicted, 2))
    print(f"trained {model.summary()} in {seconds:.0f} s")
    print(f"nucleus IoU against the full ground-truth mask (only ~1 % of pixels were painted): {iou[1]:.3f}")
    print(
        f"results in {out.resolve()}: model.safetensors, labels.tif, probabilities.tif, loss.csv"
        + (", loss.png" if plotted else " (install matplotlib for loss.png)")
    )
    return 0


def _in_napari(args: argparse.Namespace) -> int:
    try:
        from .._qt.launch import show_demo
    except ImportError as err:
        print(
            f"napari is not installed with a Qt binding ({err}): pip install 'napari-deepseg[all]'",
            file=sys.stderr,
        )
        return 1
    return show_demo(args.sample, **_settings(args))
