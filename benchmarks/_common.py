"""What accuracy.py and interactive.py share: DSB2018 loading, simulated strokes, the 3-class
maps, pooled scores, intensity / stain shifts, the ilastik-style forest, a resumable results file.

Labels follow the product: 0 unlabelled, 1 background, 2 nucleus (3-class: 2 interior, 3 ring).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np

from napari_deepseg.config import AugmentationConfig

DATASETS = {"fluorescence": "fluo_256x256", "H&E": "histo_256x320"}
BACKGROUND, NUCLEUS = 1, 2
CLASS_NAMES = ("background", "nucleus")
CLASS_NAMES_3 = ("background", "nucleus interior", "nucleus boundary")


@dataclass
class Dataset:
    name: str
    images: list[np.ndarray]
    masks: list[np.ndarray]  # bool, True = nucleus
    test_images: list[np.ndarray]
    test_masks: list[np.ndarray]
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def rgb(self) -> bool:
        return self.images[0].ndim == 3

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


def load_split(root: Path, folder: str, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    names = json.loads((root / "splits.json").read_text())[folder][split]
    images = [iio.imread(root / folder / "images" / f"{n}.png") for n in names]
    masks = [iio.imread(root / folder / "masks" / f"{n}.png") > 0 for n in names]
    return images, masks


def load_dataset(root: Path, name: str, max_images: int = 0) -> Dataset:
    """``max_images`` (smoke tests): only the first that many training and held-out images."""
    folder = DATASETS[name]
    parts = [*load_split(root, folder, "train"), *load_split(root, folder, "heldout")]
    return Dataset(name, *(p[:max_images] if max_images else p for p in parts))


# --- labels -------------------------------------------------------------------------------------


def strokes_for(masks: Sequence[np.ndarray], seed: int, pixel_fraction: float = 0.01) -> list[np.ndarray]:
    """``simulate_strokes`` per image (~1 % of pixels), seeded by (seed, image index)."""
    from napari_deepseg.data.strokes import simulate_strokes

    return [
        simulate_strokes(m, rng=np.random.default_rng([seed, i]), pixel_fraction=pixel_fraction)
        for i, m in enumerate(masks)
    ]


def dense_labels(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.where(m, NUCLEUS, BACKGROUND).astype(np.uint8) for m in masks]


def class_map_3(mask: np.ndarray, ring: int = 2) -> np.ndarray:
    """0 background, 1 nucleus interior, 2 the ``ring``-pixel band inside each nucleus outline.

    ``border_value=1``: a nucleus cut by the image edge gets no ring along the edge.
    """
    from scipy import ndimage

    eroded = ndimage.binary_erosion(mask, iterations=ring, border_value=1)
    return (mask.astype(np.uint8) + (mask & ~eroded)).astype(np.uint8)


def strokes_3class(
    class_maps: Sequence[np.ndarray], seed: int, pixel_fraction: float = 0.01
) -> list[np.ndarray]:
    """Strokes for the 3-class maps, ~``pixel_fraction / 3`` of the pixels per class.

    Background and interior: ``simulate_strokes_multiclass`` as for two classes (width 3, 3 px off
    every class boundary, so never in the ring). The 2-px ring has no pixel 4 px from its edges, so
    it gets its own pass with width-1 strokes and no margin: tracing the outline, as people do.
    """
    from napari_deepseg.data.strokes import simulate_strokes_multiclass

    out = []
    for i, cmap in enumerate(class_maps):
        labels = simulate_strokes_multiclass(
            cmap, rng=np.random.default_rng([seed, i]), pixel_fraction=pixel_fraction
        )
        ring = simulate_strokes_multiclass(
            (cmap == 2).astype(np.uint8),
            rng=np.random.default_rng([seed, i, 3]),
            pixel_fraction=pixel_fraction * 2 / 3,
            stroke_width=1,
            boundary_margin=0,
        )
        labels[(ring == 2) & (labels == 0)] = 3
        out.append(labels)
    return out


# --- scores ---------------------------------------------------------------------------------------


def confusion(predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Pooled (k, k) counts over every pixel; rows truth, columns prediction; labels 1..k."""
    total = np.zeros((k, k), np.int64)
    for p, t in zip(predictions, truths):
        total += np.bincount(
            (t.astype(np.int64).ravel() - 1) * k + (p.astype(np.int64).ravel() - 1), minlength=k * k
        ).reshape(k, k)
    return total


def iou_dice(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp = np.diag(conf).astype(float)
    fp, fn = conf.sum(0) - tp, conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fp + fn), 2 * tp / (2 * tp + fp + fn)


def nucleus_scores(predictions: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[float, float]:
    """Pooled nucleus IoU and Dice over all pixels of all images."""
    iou, dice = iou_dice(confusion(predictions, dense_labels(masks), 2))
    return float(iou[NUCLEUS - 1]), float(dice[NUCLEUS - 1])


def mean_scores(
    predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray], k: int
) -> tuple[float, float]:
    """Pooled IoU and Dice averaged over the k classes (truth labels 1..k)."""
    iou, dice = iou_dice(confusion(predictions, truths, k))
    return float(np.nanmean(iou)), float(np.nanmean(dice))


# --- robustness shifts ------------------------------------------------------------------------


def _range(image: np.ndarray) -> tuple[float, float]:
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def _as_dtype(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    lo, hi = _range(like)
    values = np.clip(values, lo, hi)
    return (np.rint(values) if np.issubdtype(like.dtype, np.integer) else values).astype(like.dtype)


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return _as_dtype(image.astype(np.float32) * factor, image)


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    lo, hi = _range(image)
    return _as_dtype(lo + (hi - lo) * ((image.astype(np.float32) - lo) / (hi - lo)) ** g, image)


def stain(image: np.ndarray, h: float, e: float) -> np.ndarray:
    """Colour-deconvolution stain shift: the haematoxylin and eosin densities (Ruifrok & Johnston,
    scikit-image's ``hed_from_rgb`` / ``rgb_from_hed``) scaled by ``h`` and ``e``, DAB kept.

    Done in optical density without ``rgb2hed``'s clamping of negative densities, so ``h = e = 1``
    returns the image unchanged.
    """
    from skimage.color import hed_from_rgb, rgb_from_hed

    lo, hi = _range(image)
    density = -np.log(np.maximum((image[..., :3].astype(np.float64) - lo) / (hi - lo), 1e-6))
    stains = density @ hed_from_rgb
    stains[..., 0] *= h
    stains[..., 1] *= e
    return _as_dtype(lo + (hi - lo) * np.exp(-(stains @ rgb_from_hed)), image[..., :3])


def shifts(rgb: bool) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "x0.6": lambda im: brightness(im, 0.6),
        "x1.6": lambda im: brightness(im, 1.6),
        "gamma 0.7": lambda im: gamma(im, 0.7),
        "gamma 1.4": lambda im: gamma(im, 1.4),
    }
    if rgb:
        out["H x0.8 E x1.2"] = lambda im: stain(im, 0.8, 1.2)
        out["H x1.2 E x0.8"] = lambda im: stain(im, 1.2, 0.8)
    return out


def nucleus_evaluation(predict: Callable[[np.ndarray], np.ndarray], data: Dataset, robustness: bool) -> dict:
    """Held-out nucleus IoU / Dice and, with ``robustness``, the IoU under each shift and the
    worst drop (clean IoU minus the lowest shifted IoU; positive = worse)."""
    start = time.perf_counter()
    iou, dice = nucleus_scores([predict(im) for im in data.test_images], data.test_masks)
    out: dict[str, Any] = dict(iou=iou, dice=dice)
    if robustness:
        shifted = {
            name: nucleus_scores([predict(shift(im)) for im in data.test_images], data.test_masks)[0]
            for name, shift in shifts(data.rgb).items()
        }
        out.update(shifted=shifted, worst_drop=iou - min(shifted.values()))
    out["eval_s"] = round(time.perf_counter() - start, 1)
    return out


# --- the ilastik-style random forest ---------------------------------------------------------


def forest_features(image: np.ndarray) -> np.ndarray:
    """(H, W, F) float32: intensity, edges and texture at sigmas 0.5-16 per channel (as ilastik)."""
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(
        image, channel_axis=-1 if image.ndim == 3 else None, sigma_min=0.5, sigma_max=16
    ).astype(np.float32)


class PixelForest:
    """scikit-learn RandomForest (100 trees, half the samples per tree) on ``forest_features``."""

    def __init__(self, seed: int = 0, trees: int = 100) -> None:
        from sklearn.ensemble import RandomForestClassifier

        self.forest = RandomForestClassifier(
            n_estimators=trees, n_jobs=-1, random_state=seed, max_samples=0.5
        )
        self.num_classes = 0

    def fit(self, features: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> PixelForest:
        """``features``: per image, (H, W, F) or already the (N, F) rows at the labelled pixels."""
        xs, ys = [], []
        for f, lab in zip(features, labels):
            where = lab > 0
            xs.append(f[where] if f.ndim == 3 else f)
            ys.append(lab[where])
        y = np.concatenate(ys)
        self.num_classes = int(y.max())
        self.forest.fit(np.concatenate(xs), y)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(K, H, W) float32 for classes 1..K (a class absent from training gets 0)."""
        h, w, f = features.shape
        p = self.forest.predict_proba(features.reshape(-1, f))
        out = np.zeros((self.num_classes, h * w), np.float32)
        out[self.forest.classes_.astype(int) - 1] = p.T
        return out.reshape(self.num_classes, h, w)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return (self.predict_proba(features).argmax(0) + 1).astype(np.uint8)


# --- results file ------------------------------------------------------------------------------


class Results:
    """A JSON dict of finished cells, written after each one, so a rerun skips what is done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cells: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def record(
        self, key: str, compute: Callable[[], dict], describe: Callable[[dict], str] | None = None
    ) -> dict:
        if key not in self.cells:
            self.cells[key] = compute()
            self.path.write_text(json.dumps(self.cells, indent=1, default=_json_default))
            if describe:
                print(f"  {key:<58} {describe(self.cells[key])}", flush=True)
        return self.cells[key]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__}")


# The A/B options: TrainingConfig fields, and AugmentationConfig fields set over its defaults.
TRAINING_OPTIONS = (
    "encoder",
    "regularisation_weight",
    "ema_decay",
    "normalisation",
    "iterations",
    "learning_rate",
    "labelled_patch_fraction",
)
AUGMENTATION_OPTIONS = ("gamma", "overexposure")


def _set_options(args: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _crf_options(args: Any) -> dict[str, float]:
    names = {"crf_sigma_intensity": "sigma_intensity", "crf_sigma_xy": "sigma_xy"}
    return {key: getattr(args, n) for n, key in names.items() if getattr(args, n, None) is not None}


def training_options(args: Any) -> dict[str, Any]:
    """The TrainingConfig fields set on the command line (the A/B options)."""
    options = _set_options(args, TRAINING_OPTIONS)
    if getattr(args, "upsampling", None):  # the network's option, set for every U-Net built here
        from napari_deepseg.models import unet

        unet.DEFAULT_UPSAMPLING = args.upsampling
    crf = _crf_options(args)
    if crf:  # the CRF loss's affinity widths, for every Trainer this run builds
        from napari_deepseg.training import loop

        loop.crf_loss = partial(loop.crf_loss, **crf)
    augmentation = _set_options(args, AUGMENTATION_OPTIONS)
    if augmentation:  # TrainingConfig turns the dict into an AugmentationConfig over the defaults
        options["augmentation"] = dict(asdict(AugmentationConfig()), **augmentation)
    return options


def tag_for(args: Any) -> str:
    """``--tag``, else one made from the options, so A/B cells never share a key."""
    if args.tag:
        return args.tag
    options = _set_options(args, TRAINING_OPTIONS + AUGMENTATION_OPTIONS)
    if getattr(args, "upsampling", None):
        options["upsampling"] = args.upsampling
    options.update(_crf_options(args))
    return ",".join(f"{n}={v}" for n, v in options.items())


def add_data_options(parser: Any, name: str) -> None:
    """--data, --max-images and --datasets; ``name`` is the script's, for the smoke-test file."""
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument(
        "--max-images",
        type=int,
        default=0,
        help="smoke tests: the first N train and held-out images "
        f"(then --json defaults to {name}-smoke.json)",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))


def add_training_options(parser: Any) -> None:
    group = parser.add_argument_group("training options (A/B), passed into TrainingConfig")
    group.add_argument("--encoder")
    group.add_argument("--regularisation-weight", type=float)
    group.add_argument("--ema-decay", type=float)
    group.add_argument("--learning-rate", type=float)
    group.add_argument("--labelled-patch-fraction", type=float)
    group.add_argument("--normalisation", choices=["per_image", "dataset"])
    group.add_argument(
        "--iterations",
        type=int,
        help="also stop at this many iterations (A/B runs that other processes may slow)",
    )
    group.add_argument("--gamma", type=float, help="AugmentationConfig.gamma")
    group.add_argument("--overexposure", type=float, help="AugmentationConfig.overexposure")
    group.add_argument(
        "--upsampling",
        choices=["nearest", "bilinear"],
        help="the U-Net decoder's up-sampling for the networks this run builds (not a TrainingConfig field)",
    )
    group.add_argument(
        "--crf-sigma-intensity", type=float, help="crf_loss's sigma_intensity (not a TrainingConfig field)"
    )
    group.add_argument(
        "--crf-sigma-xy",
        type=float,
        help="crf_loss's sigma_xy, in pixels of its downsampled grid (not a TrainingConfig field)",
    )
    group.add_argument("--tag", default="", help="goes into the result keys (default: made from the options)")


def spread(values: Sequence[float]) -> str:
    """'0.712 ± 0.008 (0.703-0.721)' for several seeds, '0.712' for one."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f} ({min(values):.3f}-{max(values):.3f})"
