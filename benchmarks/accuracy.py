"""Accuracy from sparse strokes on DSB2018 (fluorescence and H&E): held-out IoU, seeds, robustness.

On each dataset's train split (splits.json) a person's strokes are simulated per image
(``simulate_strokes``: thin random walks, ~1 % of the pixels, 3 px off class boundaries). Each
seed changes both the strokes and the training seed. The network trains with the product's
defaults from scratch (``TrainingConfig(pretrained=False, iterations=None, max_minutes=budget,
seed=s)``: no weights are downloaded; ``--pretrained-weights FILE`` starts the encoder from a
torchvision state-dict file instead, see proxy_encoder.py) for a budget of wall-clock CPU minutes,
and is scored on every pixel of the held-out images, pooled (nucleus IoU = total intersection / total union).

Cells:
- ``strokes``: the network from strokes at each ``--budgets`` minute count.
- ``random forest``: ilastik-style pixel classifier (scikit-image multiscale_basic_features,
  sigmas 0.5-16; scikit-learn RandomForest, 100 trees) on the same strokes.
- ``dense``: the network on the full masks for the same budget (the ceiling), ``--dense-budgets``.
- ``3-class``: background / nucleus interior / 2-px boundary ring inside each outline (mask minus
  its 2-iteration binary erosion), strokes from ``simulate_strokes_multiclass`` (the ring traced
  by width-1 strokes), U-Net at ``--multiclass-budgets`` and the forest; mean IoU over 3 classes.
- robustness (every cell unless ``--no-robustness``): held-out nucleus IoU with each held-out
  image brightened / darkened (x0.6, x1.6, clipped to uint8), gamma-shifted (0.7, 1.4) and, for
  H&E, stain-shifted by colour deconvolution (Ruifrok & Johnston's H&E-DAB matrix as in skimage's
  rgb2hed, haematoxylin and eosin densities scaled H x0.8 E x1.2 and H x1.2 E x0.8). "worst drop"
  = clean IoU minus the lowest shifted IoU, per shift averaged over seeds.

    python benchmarks/accuracy.py --data ../shared/data/dsb2018 --budgets 1 3 --seeds 0 1 2
    python benchmarks/accuracy.py --budgets 3 --seeds 0 --datasets H&E --ema-decay 0 --tag ema0
    python benchmarks/accuracy.py --report [--tag ema0]

Results go to ``--json`` after each cell (key per cell, seed last); a rerun skips what is done.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    CLASS_NAMES,
    CLASS_NAMES_3,
    DATASETS,
    Dataset,
    PixelForest,
    Results,
    add_data_options,
    add_training_options,
    class_map_3,
    dense_labels,
    forest_features,
    iou_dice,
    load_dataset,
    nucleus_evaluation,
    spread,
    strokes_3class,
    strokes_for,
    tag_for,
    training_options,
)
from _common import confusion as confusion_matrix

from napari_deepseg import Trainer, TrainingConfig

CELLS = ("forest", "strokes", "dense", "multiclass")


def train(images, labels, config: TrainingConfig, class_names, weights=None) -> tuple[Trainer, dict]:
    trainer = Trainer(images, labels, config, class_names=class_names, weights_path=weights)
    start, iterations = time.perf_counter(), 0
    for progress in trainer.run():
        iterations = progress.iteration
    return trainer, dict(iterations=iterations, train_s=round(time.perf_counter() - start, 1))


# A fit returns (predict: image -> labels 1..K, facts about the training).


def fit_network(images, labels, config: TrainingConfig, class_names, weights=None) -> tuple[Callable, dict]:
    trainer, out = train(images, labels, config, class_names, weights)
    return trainer.model.predict, dict(out, config=config.to_dict(), weights=weights)


def fit_forest(images, labels, seed: int) -> tuple[Callable, dict]:
    start = time.perf_counter()
    forest = PixelForest(seed).fit([forest_features(im)[lab > 0] for im, lab in zip(images, labels)], labels)
    return (
        lambda im: forest.predict(forest_features(im)),
        dict(iterations=0, train_s=round(time.perf_counter() - start, 1)),
    )


def nucleus_cell(
    data: Dataset, labels: list, robustness: bool, fit: Callable, *fit_args, mirroring: bool = False
) -> dict:
    """``mirroring``: a network's cell also scores its predictions averaged over mirror images
    (``PredictionOptions.mirroring``), same model: ``mirrored_iou``."""
    predict, out = fit(data.images, labels, *fit_args)
    out = dict(out, **nucleus_evaluation(predict, data, robustness))
    if mirroring and fit is fit_network:
        mirrored = nucleus_evaluation(partial(predict, mirroring=True), data, False)
        out.update(mirrored_iou=mirrored["iou"], mirrored_dice=mirrored["dice"])
    return out


def multiclass_cell(data: Dataset, labels: list, fit: Callable, *fit_args) -> dict:
    """Background / interior / ring, scored as the mean IoU over the 3 classes."""
    predict, out = fit(data.images, labels, *fit_args)
    start = time.perf_counter()
    truths = data.cached("3-class test", lambda: [class_map_3(m) + 1 for m in data.test_masks])
    iou, dice = iou_dice(confusion_matrix([predict(im) for im in data.test_images], truths, 3))
    return dict(
        out,
        iou=float(np.nanmean(iou)),
        dice=float(np.nanmean(dice)),
        class_iou=iou.tolist(),
        eval_s=round(time.perf_counter() - start, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_options(parser, "accuracy")
    parser.add_argument("--budgets", nargs="+", type=float, default=[1, 3, 10], help="CPU minutes")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--architectures", nargs="+", default=["unet"])
    parser.add_argument("--dense-budgets", nargs="+", type=float, default=[10])
    parser.add_argument("--multiclass-budgets", nargs="+", type=float, default=[3])
    parser.add_argument("--only", nargs="+", choices=CELLS, default=list(CELLS), help="kinds of cell to run")
    parser.add_argument("--no-robustness", action="store_true", help="skip the shifted held-out scores")
    parser.add_argument("--json", type=Path, help="results file (default accuracy.json)")
    parser.add_argument("--report", action="store_true", help="only print the table of --json")
    parser.add_argument(
        "--pretrained-weights",
        help="a torchvision state-dict file for the encoder (ImageNet's, or proxy_encoder.py's): "
        "the networks start from it (pretrained=True) instead of from scratch",
    )
    parser.add_argument(
        "--mirroring",
        action="store_true",
        help="also score each network on predictions averaged over mirror images (mirrored_iou)",
    )
    add_training_options(parser)
    args = parser.parse_args()
    tag, options = tag_for(args), training_options(args)
    weights = args.pretrained_weights
    if weights and not args.tag:
        tag = ",".join(filter(None, [tag, f"pretrained={Path(weights).stem}"]))
    results = Results(args.json or Path("accuracy-smoke.json" if args.max_images else "accuracy.json"))
    if args.report:
        report(results.cells, tag)
        return

    robust = not args.no_robustness
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; options {options or 'defaults'}",
        flush=True,
    )
    datasets = {name: load_dataset(args.data, name, args.max_images) for name in args.datasets}
    for d in datasets.values():
        print(f"{d.name}: {len(d.images)} training images, {len(d.test_images)} held out", flush=True)

    def labels_for(d: Dataset, kind: str, seed: int) -> list[np.ndarray]:
        if kind == "dense":
            return dense_labels(d.masks)
        if kind == "strokes":
            return d.cached(("strokes", seed), lambda: strokes_for(d.masks, seed))
        return d.cached(("3-class", seed), lambda: strokes_3class([class_map_3(m) for m in d.masks], seed))

    def run_cell(key: str, facts: dict, fit: Callable, *fit_args) -> None:
        d, kind = datasets[facts["dataset"]], facts["labels"]

        def compute() -> dict:
            labels = labels_for(d, kind, facts["seed"])
            if kind.startswith("3-class"):
                return dict(facts, **multiclass_cell(d, labels, fit, *fit_args))
            return dict(facts, **nucleus_cell(d, labels, robust, fit, *fit_args, mirroring=args.mirroring))

        results.record(key, compute, describe)

    forest_kinds = [
        kind for kind, cell in (("strokes", "forest"), ("3-class strokes", "multiclass")) if cell in args.only
    ]
    # The forests first: about a minute each, and every comparison needs them.
    for seed in args.seeds:
        for d in datasets.values():
            for kind in forest_kinds:
                facts = dict(
                    dataset=d.name, method="random forest", labels=kind, budget=None, tag="", seed=seed
                )
                run_cell(f"{d.name}/random forest/{kind}/seed {seed}", facts, fit_forest, seed)
    # Budgets outermost: an interrupted run still has every dataset and seed at the small budgets.
    for budget in args.budgets:
        runs = [(a, "strokes") for a in args.architectures if "strokes" in args.only]
        if "dense" in args.only and budget in args.dense_budgets:
            runs.append(("unet", "dense"))
        if "multiclass" in args.only and budget in args.multiclass_budgets:
            runs.append(("unet", "3-class strokes"))
        for seed in args.seeds:
            for d in datasets.values():
                for arch, kind in runs:
                    key = f"{d.name}/{arch}/{kind}/{budget:g} min{f' [{tag}]' if tag else ''}/seed {seed}"
                    config = TrainingConfig(
                        **{
                            "architecture": arch,
                            "pretrained": weights is not None,
                            "iterations": None,
                            "max_minutes": budget,
                            "seed": seed,
                            **options,
                        }
                    )
                    facts = dict(dataset=d.name, method=arch, labels=kind, budget=budget, tag=tag, seed=seed)
                    run_cell(
                        key,
                        facts,
                        fit_network,
                        config,
                        CLASS_NAMES_3 if kind.startswith("3-class") else CLASS_NAMES,
                        weights,
                    )
    report(results.cells, tag)


def describe(r: dict) -> str:
    drop = f"  worst drop {r['worst_drop']:+.3f}" if "worst_drop" in r else ""
    mirrored = f"  mirrored IoU {r['mirrored_iou']:.3f}" if "mirrored_iou" in r else ""
    scores = f"IoU {r['iou']:.3f}  Dice {r['dice']:.3f}{drop}{mirrored}"
    return f"its {r['iterations']:>5}  {r['train_s']:>6.1f} s  {scores}"


Group = tuple  # (dataset, method, labels, budget, tag)


def group(cells: dict[str, dict]) -> dict[Group, list[dict]]:
    groups: dict[Group, list[dict]] = defaultdict(list)
    for r in cells.values():
        if "seed" in r:  # rows of the older single-seed format have none
            groups[r["dataset"], r["method"], r["labels"], r["budget"], r["tag"]].append(r)

    def order(g: Group) -> tuple:
        return list(DATASETS).index(g[0]), g[1] != "random forest", g[1], g[2], g[3] or 0, g[4]

    return dict(sorted(groups.items(), key=lambda kv: order(kv[0])))


def worst_drop(rows: list[dict]) -> tuple[float, str] | None:
    """The shift with the largest mean drop over seeds (clean IoU minus shifted IoU)."""
    rows = [r for r in rows if "shifted" in r]
    if not rows:
        return None
    drops = {s: float(np.mean([r["iou"] - r["shifted"][s] for r in rows])) for s in rows[0]["shifted"]}
    name = max(drops, key=lambda s: drops[s])
    return drops[name], name


def report(cells: dict[str, dict], tag: str) -> None:
    groups = group(cells)
    print(
        f"\n{'dataset':<13}{'method':<15}{'labels':<17}{'min':>5} {'tag':<14}{'seeds':>6}{'its':>7}  "
        f"{'IoU mean ± std (min-max)':<32}{'Dice':>6}  worst drop (shift)"
    )
    for (dataset, method, labels, budget, t), rows in groups.items():
        wd = worst_drop(rows)
        its = np.mean([r["iterations"] for r in rows])
        dice = np.mean([r["dice"] for r in rows])
        minutes = f"{budget:g}" if budget else "-"
        print(
            f"{dataset:<13}{method:<15}{labels:<17}{minutes:>5} {t or '-':<14}{len(rows):>6}"
            f"{its:>7.0f}  {spread([r['iou'] for r in rows]):<32}{dice:>6.3f}  "
            + (f"{wd[0]:+.3f} ({wd[1]})" if wd else "-")
        )
    print("\nsummary: " + summary(groups, tag))


def summary(groups: dict[Group, list[dict]], tag: str) -> str:
    """The issue's targets, MET / MISSED and by how much, on the cells of ``tag``."""

    def mean_iou(dataset: str, method: str, labels: str, budget: float | None, seeds=None) -> float | None:
        rows = [
            r
            for r in groups.get((dataset, method, labels, budget, "" if budget is None else tag), [])
            if seeds is None or r["seed"] in seeds
        ]
        return float(np.mean([r["iou"] for r in rows])) if rows else None

    def seeds_of(*g: Any) -> set[int]:
        return {r["seed"] for r in groups.get((*g, tag), [])}

    def verdict(name: str, margins: dict[str, float], details: list[str], points: bool = False) -> str:
        if len(margins) < len(DATASETS):
            missing = ", ".join(sorted(set(DATASETS) - set(margins)))
            return f"{name}: NOT RUN on {missing} [{'; '.join(details)}]"
        worst = min(margins.values())
        amount = f"{abs(worst) * 100:.1f} pts" if points else f"{abs(worst):.3f}"
        state = f"MET (closest set by +{amount})" if worst >= 0 else f"MISSED by {amount}"
        return f"{name}: {state} [{'; '.join(details)}]"

    parts = []
    margins, details = {}, []
    for ds in DATASETS:
        seeds = seeds_of(ds, "unet", "strokes", 3.0)
        unet = mean_iou(ds, "unet", "strokes", 3.0)
        rf = mean_iou(ds, "random forest", "strokes", None, seeds)  # the same seeds' strokes
        if unet is not None and rf is not None:
            margins[ds] = unet - rf - 0.08
            details.append(f"{ds} {unet:.3f} vs RF {rf:.3f} = {unet - rf:+.3f}, {len(seeds)} seed(s)")
    parts.append(verdict("3 CPU-min strokes: U-Net IoU >= RF + 0.08 on both sets", margins, details))
    margins, details = {}, []
    for ds in DATASETS:
        unet, dense = mean_iou(ds, "unet", "strokes", 10.0), mean_iou(ds, "unet", "dense", 10.0)
        if unet is not None and dense:
            margins[ds] = unet / dense - 0.95
            details.append(f"{ds} {unet:.3f} / dense {dense:.3f} = {unet / dense:.1%}")
    parts.append(verdict("10 min >= 95 % of the dense ceiling", margins, details, points=True))
    margins, details = {}, []
    for ds in DATASETS:
        wd = worst_drop(groups.get((ds, "unet", "strokes", 3.0, tag), []))
        rf = worst_drop(groups.get((ds, "random forest", "strokes", None, ""), []))
        if wd:
            margins[ds] = 0.02 - wd[0]
            details.append(
                f"{ds} U-Net 3 min {wd[0]:+.3f} ({wd[1]})" + (f", RF {rf[0]:+.3f} ({rf[1]})" if rf else "")
            )
    parts.append(verdict("robustness drop <= 0.02", margins, details))
    three = [
        f"{ds} {m}{f' {b:g} min' if b else ''} {np.mean([r['iou'] for r in rows]):.3f}"
        for (ds, m, labels, b, t), rows in groups.items()
        if labels == "3-class strokes" and (t == tag or b is None)
    ]
    if three:
        parts.append("3-class mean IoU: " + "; ".join(three))
    return (f"[{tag}] " if tag else "") + " | ".join(parts)


if __name__ == "__main__":
    main()
