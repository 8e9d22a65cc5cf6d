"""Command line: ``napari-deepseg train | predict | demo`` over the same engine the widgets use."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import AugmentationConfig, TrainingConfig
from ..image_io import read_image, write_image
from ..models import available_architectures


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as err:
        print(f"napari-deepseg {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-deepseg", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train a model on image/labels pairs")
    train.add_argument("--image", action="append", required=True, type=Path, help="image file (repeatable)")
    train.add_argument("--labels", action="append", required=True, type=Path,
                       help="labels file for the preceding --image: 0 unlabelled, 1..K classes")
    train.add_argument("--output", required=True, type=Path, help="model file to write")
    _add_training_options(train)
    train.add_argument("--continue-from", type=Path, metavar="MODEL",
                       help="continue training this model instead of starting a new one")
    train.set_defaults(func=_train)

    predict = sub.add_parser("predict", help="segment an image with a trained model")
    predict.add_argument("--model", required=True, type=Path)
    predict.add_argument("--image", required=True, type=Path)
    predict.add_argument("--output", required=True, type=Path, help="labels file (.tif or .png)")
    predict.add_argument("--min-probability", type=float, default=0.0,
                         help="pixels whose best class is less probable than this stay 0 (default 0)")
    predict.add_argument("--probabilities", type=Path,
                         help="also write float32 probabilities (K, ...) as TIFF")
    _add_prediction_options(predict)
    predict.set_defaults(func=_predict)

    demo = sub.add_parser("demo", help="the bundled sample in napari, ready to train (--headless: train and "
                                       "write the results)")
    demo.add_argument("--headless", action="store_true",
                      help="no viewer: train, predict and write files (default: open napari, ready to train)")
    demo.add_argument("--sample", choices=("fluorescence", "he"), default="fluorescence")
    demo.add_argument("--output", type=Path, default=Path("deepseg-demo"), help="folder for the results")
    demo.add_argument("--iterations", type=int, default=150)
    demo.add_argument("--architecture", choices=available_architectures(), default="unet")
    demo.add_argument("--device", default="auto")
    demo.set_defaults(func=_demo)
    return parser


def _add_training_options(p: argparse.ArgumentParser) -> None:
    defaults = TrainingConfig()
    p.add_argument("--architecture", choices=available_architectures(), default=defaults.architecture)
    p.add_argument("--encoder", default=None, help="encoder name (default: the architecture's default)")
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights")
    p.add_argument("--pretrained-weights", type=Path, help="local file with pretrained encoder weights")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"stop after this many iterations (default {defaults.iterations}, none with "
                        "--minutes; "
                        "0: no limit, train until Ctrl+C)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop after this many minutes of training (or at --iterations, if given and first)")
    p.add_argument("--normalisation", default=defaults.normalisation, choices=("per_image", "dataset"),
                   help="per_image: each image by its own percentiles (default); dataset: the training "
                        "images' bounds for every image, when absolute intensity carries the class")
    p.add_argument("--ema-decay", type=float, default=defaults.ema_decay,
                   help="decay of the averaged weights that are saved (0: keep the last weights)")
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


def _add_prediction_options(p: argparse.ArgumentParser) -> None:
    from ..prediction import TilingOptions

    tiling = TilingOptions()
    p.add_argument("--tile-size", type=int, default=tiling.tile_size)
    p.add_argument("--overlap", type=int, default=tiling.overlap)
    p.add_argument("--batch-size", type=int, default=tiling.batch_size, help="tiles per forward pass")
    p.add_argument("--device", default=None, help="default: the model's device (CPU) ")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--channel-axis", type=int)


def _config_from_args(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(
        architecture=args.architecture, encoder=args.encoder, pretrained=not args.no_pretrained,
        iterations=(args.iterations or None) if args.iterations is not None or args.minutes
        else TrainingConfig().iterations, max_minutes=args.minutes, normalisation=args.normalisation,
        ema_decay=args.ema_decay, batch_size=args.batch_size, patch_size=args.patch_size,
        learning_rate=args.learning_rate, optimizer=args.optimizer, schedule=args.schedule, loss=args.loss,
        class_balancing=args.class_balancing, validation_fraction=args.validation_fraction, seed=args.seed,
        device=args.device, precision=args.precision,
        augmentation=AugmentationConfig.disabled() if args.no_augmentation else AugmentationConfig())


def _run_training(trainer, description: str) -> None:
    from tqdm import tqdm

    config = trainer.config
    if config.until_stopped:
        print("training until interrupted (Ctrl+C saves the model so far)", file=sys.stderr)
    # With a time limit the bar counts thousandths of the run, whichever limit is ahead.
    by_time = config.max_minutes is not None
    total = 1000 if by_time else config.iterations
    with tqdm(total=total, desc=description, unit="‰" if by_time else "it", file=sys.stderr) as bar:
        try:
            for record in trainer.run():
                postfix = {"it": record.iteration, "loss": f"{record.loss:.4f}",
                           "err": f"{record.error_rate:.3f}"}
                if record.validation is not None:
                    postfix["val_mIoU"] = f"{record.validation.mean_iou:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(round(1000 * record.fraction_done) - bar.n if by_time else 1)
        except KeyboardInterrupt:
            if not config.until_stopped:
                raise
            print("\nstopped; saving the model so far", file=sys.stderr)


def _train(args: argparse.Namespace) -> int:
    from ..segmentation_model import SegmentationModel
    from ..training import Trainer

    if len(args.image) != len(args.labels):
        raise ValueError(
            f"give one --labels per --image ({len(args.image)} images, {len(args.labels)} labels)")
    images = [read_image(p) for p in args.image]
    labels = [read_image(p) for p in args.labels]
    previous = SegmentationModel.load(args.continue_from) if args.continue_from else None
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    trainer = Trainer(images, labels, _config_from_args(args), channel_axis=args.channel_axis,
                      class_names=names, model=previous, weights_path=args.pretrained_weights)
    _run_training(trainer, f"training {trainer.model.architecture}")
    path = trainer.model.save(args.output)
    print(f"saved {trainer.model.summary()} to {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..image_io import TIFF_SUFFIXES, create_labels_file
    from ..prediction import CompactProbabilities, apply_threshold, label_dtype
    from ..segmentation_model import SegmentationModel

    model = SegmentationModel.load(args.model)
    image = read_image(args.image)
    options = dict(channel_axis=args.channel_axis, tile_size=args.tile_size, overlap=args.overlap,
                   batch_size=args.batch_size, device=args.device, precision=args.precision)
    with tqdm(desc="predicting", unit="tile", file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if args.probabilities:
            probabilities = model.predict_proba(image, progress=progress, **options)
            labels = apply_threshold(CompactProbabilities.from_probabilities(probabilities),
                                     args.min_probability)
            write_image(args.output, labels)
        elif args.output.suffix.lower() in TIFF_SUFFIXES:
            # Streamed into a memory-mapped TIFF: images larger than memory work.
            view = model.view(image, args.channel_axis)
            labels = create_labels_file(args.output, view.labels_shape, label_dtype(model.num_classes))
            model.predict(image, min_probability=args.min_probability, out=labels, progress=progress,
                          **options)
            labels.flush()
        else:
            labels = model.predict(image, min_probability=args.min_probability, progress=progress,
                                   **options)
            write_image(args.output, labels)
    counts = _class_counts(labels, model.class_names)
    print(f"wrote labels {labels.shape} with classes {counts} to {args.output}")
    if args.probabilities:
        write_image(args.probabilities, probabilities)
        print(f"wrote probabilities {probabilities.shape} to {args.probabilities}")
    return 0


def _class_counts(labels: np.ndarray, names: Sequence[str]) -> str:
    counts = np.zeros(len(names) + 1, np.int64)
    flat = labels.reshape(-1)
    for start in range(0, flat.size, 1 << 24):  # in chunks: bincount makes an int64 copy
        counts += np.bincount(flat[start:start + (1 << 24)], minlength=len(names) + 1)
    parts = [f"{names[k - 1]}: {counts[k] / labels.size:.1%}" for k in range(1, len(names) + 1)]
    if counts[0]:
        parts.append(f"unclassified: {counts[0] / labels.size:.1%}")
    return ", ".join(parts)


def _demo(args: argparse.Namespace) -> int:
    if not args.headless:
        return _show_in_napari(args)
    from .. import sample_data
    from ..prediction import apply_threshold
    from ..training import Trainer

    image, strokes = (sample_data.load_fluorescence_sample() if args.sample == "fluorescence"
                      else sample_data.load_he_sample())
    config = TrainingConfig(architecture=args.architecture, iterations=args.iterations, patch_size=128,
                            batch_size=4, device=args.device, validation_fraction=0.0)
    trainer = Trainer(image, strokes, config, class_names=("background", "nucleus"))
    started = time.perf_counter()
    _run_training(trainer, f"training {args.architecture} on the {args.sample} sample")
    seconds = time.perf_counter() - started
    model = trainer.model
    probabilities = model.predict_proba(image)
    labels = apply_threshold(probabilities, 0.0)

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.safetensors")
    write_image(out / "labels.tif", labels)
    write_image(out / "probabilities.tif", probabilities)
    _write_history_csv(out / "loss.csv", model.history)
    plotted = _plot_history(out / "loss.png", model.history)
    mask = sample_data.load_sample_mask(args.sample)
    iou = _iou(labels == 2, mask)
    print(f"trained {model.summary()} in {seconds:.0f} s")
    print(f"nucleus IoU against the full ground-truth mask (only ~1 % of pixels were painted): {iou:.3f}")
    print(f"results in {out.resolve()}: model.safetensors, labels.tif, probabilities.tif, loss.csv"
          + (", loss.png" if plotted else " (install matplotlib for loss.png)"))
    return 0


def _iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def _write_history_csv(path: Path, history: list[dict]) -> None:
    fields = ["iteration", "loss", "error_rate", "learning_rate", "elapsed_seconds", "samples_per_second"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields + ["validation_mean_iou"])
        for row in history:
            val = row.get("validation")
            iou = [v for v in (val or {}).get("iou", []) if v is not None]
            writer.writerow([row[k] for k in fields] + [sum(iou) / len(iou) if iou else ""])


def _plot_history(path: Path, history: list[dict]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return False
    iterations = [r["iteration"] for r in history]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    ax.plot(iterations, [r["loss"] for r in history], lw=0.8, alpha=0.4, label="loss")
    ax.plot(iterations, _smooth([r["loss"] for r in history]), lw=1.8, label="loss (smoothed)")
    ax.plot(iterations, _smooth([r["error_rate"] for r in history]), lw=1.2, label="error rate (smoothed)")
    ax.set_xlabel("iteration")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def _smooth(values: list[float], alpha: float = 0.1) -> list[float]:
    out, current = [], None
    for v in values:
        current = v if current is None else (1 - alpha) * current + alpha * v
        out.append(current)
    return out


def _show_in_napari(args: argparse.Namespace) -> int:
    """napari on the sample (image + strokes) with the Train and Predict widgets docked and the
    training preset as short as the headless demo; nothing is trained until Start is pressed."""
    try:
        import napari
        from qtpy.QtCore import QTimer

        # Load torch (and triton, which it imports) before napari creates its OpenGL context: with
        # Mesa's LLVM-based drivers a later triton import crashes on clashing LLVM symbols.
        from .._qt import predict_widget, train_widget  # noqa: F401
    except ImportError as err:
        print(f"napari is not installed with a Qt binding ({err}): pip install 'napari-deepseg[all]'",
              file=sys.stderr)
        return 1
    viewer = napari.Viewer(title="napari-deepseg demo")
    image, strokes = viewer.open_sample("napari-deepseg", "fluorescence_tile" if args.sample == "fluorescence"
                                        else "he_tile")
    train_dock, train = viewer.window.add_plugin_dock_widget("napari-deepseg", "Train")
    viewer.window.add_plugin_dock_widget("napari-deepseg", "Predict", tabify=True)
    train.set_pairs([(image, strokes)])
    train.set_config(architecture=args.architecture, iterations=args.iterations, patch_size=128, batch_size=4,
                     device=args.device, validation_fraction=0.0)
    viewer.layers.selection.active = strokes  # ready to paint more strokes
    QTimer.singleShot(0, train_dock.raise_)  # start on the Train tab (once the tab bar exists)
    QTimer.singleShot(0, viewer.reset_view)  # fit the image once the docks have taken their space
    print("Press Start in the Train tab; when training ends, Predict in the Predict tab and move the "
          "minimum-probability slider.")
    napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
