"""Accuracy from sparse strokes on DSB2018 (fluorescence and H&E), held-out nucleus IoU and Dice.

On each dataset's seeded train split (splits.json) a person's strokes are simulated: a few thin
random-walk strokes per class per image, about 1 % of the pixels, kept off class boundaries
(``simulate_strokes``, seeded). Each network trains with default settings (from scratch: no
weights are downloaded) for a fixed time budget and is scored on every pixel of the held-out
images, pooled (nucleus IoU = total intersection / total union over the split).

Budgets are wall-clock minutes of this machine training alone. To keep runs comparable on a
shared machine, each architecture's seconds per iteration are measured once at the start and a
budget becomes a fixed iteration count (printed); the cosine schedule spans that count as it
would for a user who asked for it.

In the same table:
- ``random forest``: an ilastik-style pixel classifier (scikit-image multiscale_basic_features:
  intensity, edges, texture at sigmas 0.5-16; scikit-learn RandomForest, 100 trees) on the same strokes.
- ``dense``: the same network trained on the full masks for the same budget (the ceiling).
- ``--fp32-check``: U-Net in fp32 for the same iterations as the bf16 1-minute run (convergence of
  the bf16 default).

    python benchmarks/accuracy.py --data ../shared/data/dsb2018 [--budgets 1 3 10] [--json out.json]

Results are appended to ``--json`` after each run; running again with the same file skips what is done.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from napari_deepseg import Trainer, TrainingConfig
from napari_deepseg.data.strokes import simulate_strokes

DATASETS = {"fluorescence": "fluo_256x256", "H&E": "histo_256x320"}
BACKGROUND, NUCLEUS = 1, 2


def load_split(root: Path, folder: str, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    names = json.loads((root / "splits.json").read_text())[folder][split]
    images = [iio.imread(root / folder / "images" / f"{n}.png") for n in names]
    masks = [iio.imread(root / folder / "masks" / f"{n}.png") > 0 for n in names]
    return images, masks


def strokes_for(masks: list[np.ndarray], seed: int) -> list[np.ndarray]:
    return [simulate_strokes(m, rng=np.random.default_rng([seed, i])) for i, m in enumerate(masks)]


def dense_labels(masks: list[np.ndarray]) -> list[np.ndarray]:
    return [np.where(m, NUCLEUS, BACKGROUND).astype(np.uint8) for m in masks]


def score(predictions: list[np.ndarray], masks: list[np.ndarray]) -> tuple[float, float]:
    """Pooled nucleus IoU and Dice over all pixels of all images."""
    inter = sum(int(np.logical_and(p == NUCLEUS, m).sum()) for p, m in zip(predictions, masks))
    pred = sum(int((p == NUCLEUS).sum()) for p in predictions)
    true = sum(int(m.sum()) for m in masks)
    union = pred + true - inter
    return inter / union, 2 * inter / (pred + true)


def config_for(architecture: str, iterations: int, precision: str = "auto", seed: int = 0) -> TrainingConfig:
    return TrainingConfig(architecture=architecture, iterations=iterations, precision=precision, seed=seed)


def seconds_per_iteration(architecture: str, images, labels, warmup: int = 2, timed: int = 5) -> float:
    run = Trainer(images, labels, config_for(architecture, 10_000)).run()
    for _ in range(warmup):
        next(run)
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        next(run)
        times.append(time.perf_counter() - start)
    run.close()
    return float(np.median(times))


def calibrate(architecture: str, images, labels) -> dict:
    """Seconds per iteration, stored in the results file as a row of its own."""
    return dict(iterations=0, train_s=seconds_per_iteration(architecture, images, labels),
                iou=float("nan"), dice=float("nan"))


def train_and_score(architecture, iterations, images, labels, test_images, test_masks,
                    precision="auto") -> dict:
    start = time.perf_counter()
    trainer = Trainer(images, labels, config_for(architecture, iterations, precision),
                      class_names=("background", "nucleus"))
    for _ in trainer.run():
        pass
    train_s = time.perf_counter() - start
    predictions = [trainer.model.predict(img) for img in test_images]
    iou, dice = score(predictions, test_masks)
    return dict(iterations=iterations, train_s=round(train_s, 1), iou=iou, dice=dice)


def random_forest(images, labels, test_images, test_masks, seed: int = 0) -> dict:
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    def features(image):
        return multiscale_basic_features(image, channel_axis=-1 if image.ndim == 3 else None,
                                         sigma_min=0.5, sigma_max=16).astype(np.float32)

    start = time.perf_counter()
    xs, ys = [], []
    for image, label in zip(images, labels):
        where = label > 0
        xs.append(features(image)[where])
        ys.append(label[where])
    forest = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed, max_samples=0.5)
    forest.fit(np.concatenate(xs), np.concatenate(ys))
    train_s = time.perf_counter() - start
    predictions = []
    for image in test_images:
        f = features(image)
        predictions.append(forest.predict(f.reshape(-1, f.shape[-1])).reshape(f.shape[:2]))
    iou, dice = score(predictions, test_masks)
    return dict(iterations=0, train_s=round(train_s, 1), iou=iou, dice=dice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[1, 3, 10], help="minutes")
    parser.add_argument("--architectures", nargs="+", default=["unet", "deeplabv3plus", "fcn8s"])
    parser.add_argument("--all-budgets-for", nargs="+", default=["unet"],
                        help="architectures run at every budget; the others stop at 3 minutes")
    parser.add_argument("--dense-budgets", nargs="+", type=float, default=[10])
    parser.add_argument("--fp32-check", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("accuracy.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true", help="only print the table of --json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*pretrained.*")  # offline: from scratch, by design

    results: dict[str, dict] = json.loads(args.json.read_text()) if args.json.exists() else {}
    if args.report:
        print_table(results)
        return

    def record(key: str, compute, *compute_args) -> dict:
        if key not in results:
            results[key] = compute(*compute_args)
            args.json.write_text(json.dumps(results, indent=1))
            r = results[key]
            print(f"  {key:<55} its {r['iterations']:>5}  {r['train_s']:>7.1f} s  "
                  f"IoU {r['iou']:.3f}  Dice {r['dice']:.3f}", flush=True)
        return results[key]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    data, speed = {}, {}
    for dataset in args.datasets:
        images, masks = load_split(args.data, DATASETS[dataset], "train")
        test_images, test_masks = load_split(args.data, DATASETS[dataset], "heldout")
        strokes = strokes_for(masks, args.seed)
        data[dataset] = dict(images=images, strokes=strokes, dense=dense_labels(masks),
                             test=(test_images, test_masks))
        share = sum(int((s > 0).sum()) for s in strokes) / sum(s.size for s in strokes)
        print(f"{dataset}: {len(images)} training images ({share:.2%} of pixels painted), "
              f"{len(test_images)} held out", flush=True)
        for a in args.architectures:  # first, while the machine is as idle as it will be
            speed[dataset, a] = record(f"{dataset}/{a}/seconds_per_iteration", calibrate, a, images,
                                       strokes)["train_s"]
    for dataset, d in data.items():
        record(f"{dataset}/random forest/strokes", random_forest, d["images"], d["strokes"], *d["test"],
               args.seed)
        if args.fp32_check:  # the same iterations as the 1-minute bf16 run
            its = max(1, round(60 / speed[dataset, "unet"]))
            record(f"{dataset}/unet/strokes fp32/1 min", train_and_score, "unet", its, d["images"],
                   d["strokes"], *d["test"], "fp32")
    # Budgets outermost: an interrupted run still has every dataset at the small budgets.
    for budget in args.budgets:
        for dataset, d in data.items():
            for arch in args.architectures:
                if budget > 3 and arch not in args.all_budgets_for:
                    continue
                its = max(1, round(budget * 60 / speed[dataset, arch]))
                record(f"{dataset}/{arch}/strokes/{budget:g} min", train_and_score, arch, its, d["images"],
                       d["strokes"], *d["test"])
            if budget in args.dense_budgets:
                its = max(1, round(budget * 60 / speed[dataset, "unet"]))
                record(f"{dataset}/unet/dense/{budget:g} min", train_and_score, "unet", its, d["images"],
                       d["dense"], *d["test"])

    print_table(results)


def print_table(results: dict[str, dict]) -> None:
    print(f"\n{'dataset / method / labels / budget':<55}{'its':>6}{'train s':>9}{'IoU':>7}{'Dice':>7}")
    for key, r in results.items():
        if key.endswith("seconds_per_iteration"):
            continue
        print(f"{key:<55}{r['iterations']:>6}{r['train_s']:>9.1f}{r['iou']:>7.3f}{r['dice']:>7.3f}")
    lines = []
    for dataset in DATASETS:
        rf = results.get(f"{dataset}/random forest/strokes")
        dense = results.get(f"{dataset}/unet/dense/10 min")
        for budget in ("1 min", "3 min", "10 min"):
            unet = results.get(f"{dataset}/unet/strokes/{budget}")
            if rf and unet:
                lines.append(f"{dataset} {budget} U-Net {unet['iou']:.3f} vs RF {rf['iou']:.3f}")
        if dense:
            lines.append(f"{dataset} dense 10 min {dense['iou']:.3f}")
    print("\nsummary: held-out nucleus IoU from ~1 % strokes: " + "; ".join(lines))


if __name__ == "__main__":
    main()
