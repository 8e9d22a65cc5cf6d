"""A simulated user paints while the network trains, against a forest retrained after every stroke.

Setup, per dataset and seed: ``--train-images`` images of the train split (seeded choice; 0 =
all) start with 2 strokes per class each (``simulate_strokes``, one stroke per class per call).
One ``Trainer`` run (U-Net, the product's defaults from scratch, ``iterations=None``) trains for
``--minutes`` of training time: with ``--limit none`` (default) the config has no limit (until
stopped: constant learning rate after the warm-up, averaged weights) and the script stops it;
``--limit minutes`` sets ``max_minutes`` too, but the trainer's clock is wall time since
``run()`` began, so the user's pauses count and the run ends early (flagged in the report).
16 images by default, not the whole split: with 2 strokes per class on all 267 fluorescence
images the user's few added strokes would be lost among 1,000 (``--train-images 0`` for all).

Every ``--look-every`` seconds of training the user looks at the current prediction on those
images (``predict_compact``) and adds ``--strokes-per-look`` stroke(s), handed over with
``trainer.update_labels``:

- policy ``error``: inside the largest wrongly predicted, still unpainted connected region
  (per true class, ``scipy.ndimage.label``), the longest of 8 random walks from its deepest
  pixel, kept a pixel inside its edge where it is wide enough, 3 px wide;
- policy ``uncertainty``: where ``napari_deepseg.uncertainty`` (9x9 mean) is highest among
  unpainted pixels, painted with that pixel's true class, inside its class region.

Every ``--eval-every`` seconds of training the held-out nucleus IoU is recorded with the stroke
count. Only time inside the training loop is training time: the user's looks (prediction +
stroke placement) and the held-out scoring are timed and reported apart.

The forest (as in accuracy.py) gets the same user and policy: it is refitted after each added
stroke (its fit time reported), and scored on the held-out images at each stroke count.

Reported: IoU over training time and over strokes; strokes (and seconds) to reach 90 % of the
dense ceiling (``--ceiling NAME=IOU``, else the mean dense 10-min U-Net IoU in
``--accuracy-json``); the first training second at which the preview's held-out IoU reaches the
forest's at the same stroke count.

    python benchmarks/interactive.py --data ../shared/data/dsb2018 --minutes 5 --policies error uncertainty
    python benchmarks/interactive.py --report

Results go to ``--json`` (one key per session); a rerun skips finished sessions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    CLASS_NAMES,
    Dataset,
    PixelForest,
    Results,
    add_data_options,
    add_training_options,
    dense_labels,
    forest_features,
    load_dataset,
    nucleus_scores,
    tag_for,
    training_options,
)
from scipy import ndimage

from napari_deepseg import Trainer, TrainingConfig, apply_threshold, uncertainty
from napari_deepseg.data.strokes import random_walk, simulate_strokes

POLICIES = ("error", "uncertainty")


# --- the simulated user -----------------------------------------------------------------------


def initial_strokes(masks: list[np.ndarray], seed: int, per_class: int = 2) -> list[np.ndarray]:
    """``per_class`` strokes per class per image: a 1-pixel target makes each call paint one."""
    out = []
    for i, mask in enumerate(masks):
        labels = np.zeros(mask.shape, np.uint8)
        for j in range(per_class):
            new = simulate_strokes(
                mask, rng=np.random.default_rng([seed, i, j]), pixel_fraction=2 / mask.size
            )
            free = (new > 0) & (labels == 0)
            labels[free] = new[free]
        out.append(labels)
    return out


def stroke_inside(
    region: np.ndarray,
    rng: np.random.Generator,
    start: tuple[int, int] | None = None,
    length: int = 30,
    width: int = 3,
) -> np.ndarray:
    """A stroke (bool mask) inside ``region``: the longest of 8 random walks from ``start`` (else
    the deepest pixel), kept a pixel off the region's edge where the region is wide enough."""
    depth = ndimage.distance_transform_edt(region)
    if start is None:
        start = np.unravel_index(int(np.argmax(depth)), depth.shape)
    allowed = depth >= 2 if depth.max() >= 2 else region
    path = max((random_walk(np.asarray(start), allowed, rng, length) for _ in range(8)), key=len)
    stroke = np.zeros(region.shape, bool)
    stroke[tuple(np.transpose(path))] = True
    radius = width // 2
    disk = np.add.outer(np.arange(-radius, radius + 1) ** 2, np.arange(-radius, radius + 1) ** 2) <= radius**2
    return ndimage.binary_dilation(stroke, structure=disk) & region


def _largest_error(views, truths, labels, done) -> tuple[int, int, np.ndarray] | None:
    best: tuple[int, int, np.ndarray] | None = None
    best_size = 0
    for i, predicted, _ in views:
        wrong = (predicted != truths[i]) & (labels[i] == 0) & ~done[i]
        for c in np.unique(truths[i][wrong]):
            regions, n = ndimage.label(wrong & (truths[i] == c))
            sizes = np.bincount(regions.ravel())[1:]
            if n and sizes.max() > best_size:
                best_size = int(sizes.max())
                best = i, int(c), regions == 1 + int(np.argmax(sizes))
    return best


def _most_uncertain(views, truths, labels, done) -> tuple[int, int, np.ndarray, tuple[int, int]] | None:
    best, best_value = None, -1.0
    for i, _, u in views:
        free = (labels[i] == 0) & ~done[i]
        score = np.where(free, ndimage.uniform_filter(u * free, 9), -1.0)
        p = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[p] > best_value:
            best, best_value = (i, p), float(score[p])
    if best is None or best_value < 0:
        return None
    i, (y, x) = best
    c = int(truths[i][y, x])
    box = np.zeros(labels[i].shape, bool)
    box[max(y - 20, 0) : y + 21, max(x - 20, 0) : x + 21] = True
    regions, _ = ndimage.label((truths[i] == c) & (labels[i] == 0) & box)
    return i, c, regions == regions[y, x], (int(y), int(x))


def add_strokes(policy: str, views, truths, labels, rng, count: int) -> list[int]:
    """Paint ``count`` strokes into ``labels`` (in place) by ``policy``; the pairs changed.

    ``views``: (pair, predicted labels 1..K, uncertainty or None) of the images looked at. A
    region painted in this look is not chosen again in it.
    """
    done = {i: np.zeros(labels[i].shape, bool) for i, _, _ in views}
    changed = []
    for _ in range(count):
        if policy == "error":
            found = _largest_error(views, truths, labels, done)
            start = None
        else:
            found = _most_uncertain(views, truths, labels, done)
            start = found[3] if found else None
        if found is None:
            break
        i, c, region = found[:3]
        stroke = stroke_inside(region, rng, start) & (labels[i] == 0)
        labels[i][stroke] = c
        done[i] |= region
        changed.append(i)
    return changed


def looked_at(look: int, n: int, per_look: int, order: np.ndarray) -> list[int]:
    if not per_look or per_look >= n:
        return list(range(n))
    return [int(order[(look * per_look + k) % n]) for k in range(per_look)]


# --- the two sessions -----------------------------------------------------------------------


def network_session(
    d: Dataset,
    pairs: list[int],
    start: list[np.ndarray],
    policy: str,
    seed: int,
    args: argparse.Namespace,
    options: dict,
) -> dict:
    images = [d.images[p] for p in pairs]
    truths = dense_labels([d.masks[p] for p in pairs])
    labels = [s.copy() for s in start]
    budget = args.minutes * 60
    config = TrainingConfig(
        pretrained=False,
        iterations=None,
        seed=seed,
        max_minutes=args.minutes if args.limit == "minutes" else None,
        **options,
    )
    trainer = Trainer(images, labels, config, class_names=CLASS_NAMES)
    rng, order = np.random.default_rng([seed, 7]), np.random.default_rng([seed, 8]).permutation(len(pairs))
    strokes = initial = count_strokes(start, args.start_strokes)
    run = trainer.run()
    clock = look_s = eval_s = 0.0
    looks, next_eval, next_look = 0, args.eval_every, args.look_every
    checks: list[dict] = []
    progress = None
    while clock < budget:
        t = time.perf_counter()
        progress = next(run, None)
        clock += time.perf_counter() - t
        if progress is None:
            break
        if clock >= next_eval or progress.finished or clock >= budget:
            next_eval += args.eval_every
            t = time.perf_counter()
            iou = nucleus_scores([trainer.model.predict(im) for im in d.test_images], d.test_masks)[0]
            e = time.perf_counter() - t
            eval_s += e
            checks.append(
                dict(
                    train_s=round(clock, 1),
                    iteration=progress.iteration,
                    strokes=strokes,
                    iou=iou,
                    eval_s=round(e, 2),
                    trainer_elapsed_s=round(progress.elapsed_seconds, 1),
                )
            )
            print(
                f"    {clock:6.0f} s  it {progress.iteration:>5}  strokes {strokes:>4}  IoU {iou:.3f}",
                flush=True,
            )
        if clock >= next_look and clock < budget:
            next_look += args.look_every
            t = time.perf_counter()
            views = []
            for i in looked_at(looks, len(pairs), args.images_per_look, order):
                compact = trainer.model.predict_compact(images[i])
                views.append(
                    (
                        i,
                        apply_threshold(compact, 0.0),
                        uncertainty(compact) if policy == "uncertainty" else None,
                    )
                )
            for i in add_strokes(policy, views, truths, labels, rng, args.strokes_per_look):
                trainer.update_labels(labels[i], pair=i)
                strokes += 1
            looks += 1
            look_s += time.perf_counter() - t
        if progress.finished:
            break
    run.close()
    return dict(
        checks=checks,
        train_s=round(clock, 1),
        iterations=progress.iteration if progress else 0,
        look_s=round(look_s, 1),
        eval_s=round(eval_s, 1),
        looks=looks,
        start_strokes=initial,
        ended_early=clock < budget - 1,
        config=config.to_dict(),
    )


def forest_session(
    d: Dataset,
    pairs: list[int],
    start: list[np.ndarray],
    policy: str,
    seed: int,
    added: int,
    args: argparse.Namespace,
) -> dict:
    features = [forest_features(d.images[p]) for p in pairs]
    test_features = d.cached("test features", lambda: [forest_features(im) for im in d.test_images])
    truths = dense_labels([d.masks[p] for p in pairs])
    labels = [s.copy() for s in start]
    rng, order = np.random.default_rng([seed, 7]), np.random.default_rng([seed, 8]).permutation(len(pairs))
    strokes = initial = count_strokes(start, args.start_strokes)
    records: list[dict] = []
    for look in range(added + 1):
        t = time.perf_counter()
        forest = PixelForest(seed).fit(features, labels)
        fit_s = time.perf_counter() - t
        iou = nucleus_scores([forest.predict(f) for f in test_features], d.test_masks)[0]
        records.append(dict(strokes=strokes, iou=iou, fit_s=round(fit_s, 2)))
        print(f"    forest  strokes {strokes:>4}  IoU {iou:.3f}  fit {fit_s:.1f} s", flush=True)
        if strokes - initial >= added:
            break
        views = []
        for i in looked_at(look, len(pairs), args.images_per_look, order):
            p = forest.predict_proba(features[i])
            views.append((i, (p.argmax(0) + 1).astype(np.uint8), uncertainty(p)))
        painted = add_strokes(policy, views, truths, labels, rng, args.strokes_per_look)
        if not painted:
            break
        strokes += len(painted)
    return dict(records=records)


def count_strokes(labels: list[np.ndarray], per_class: int) -> int:
    """Strokes of ``initial_strokes``: ``per_class`` per class present in each image."""
    return sum(per_class * len(np.unique(lab[lab > 0])) for lab in labels)


def planned_looks(args: argparse.Namespace) -> int:
    """Looks at ``look_every``, 2 x ``look_every``, ... strictly before the end of training."""
    return max(int(np.ceil(args.minutes * 60 / args.look_every)) - 1, 0)


# --- driver and report ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_options(parser, "interactive")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training time of the session")
    parser.add_argument("--look-every", type=float, default=30.0, help="training seconds between looks")
    parser.add_argument(
        "--eval-every", type=float, default=15.0, help="training seconds between held-out scores"
    )
    parser.add_argument("--strokes-per-look", type=int, default=1)
    parser.add_argument("--start-strokes", type=int, default=2, help="per class per training image")
    parser.add_argument("--train-images", type=int, default=16, help="images the user paints on (0: all)")
    parser.add_argument(
        "--heldout-images",
        type=int,
        default=0,
        help="score on the first N held-out images only (0: all; fluorescence has 67)",
    )
    parser.add_argument(
        "--images-per-look",
        type=int,
        default=0,
        help="images the user looks at each time, in turn (0: all of them)",
    )
    parser.add_argument(
        "--limit",
        choices=["minutes", "none"],
        default="none",
        help="TrainingConfig.max_minutes = --minutes, or no limit (until stopped)",
    )
    parser.add_argument(
        "--forest-strokes",
        type=int,
        help="strokes the forest's user adds (default: as many as ours is planned to)",
    )
    parser.add_argument("--no-forest", action="store_true")
    parser.add_argument(
        "--ceiling",
        nargs="+",
        default=[],
        metavar="NAME=IOU",
        help="dense ceiling per dataset, e.g. fluorescence=0.77 'H&E=0.78'",
    )
    parser.add_argument(
        "--accuracy-json",
        type=Path,
        default=Path("accuracy.json"),
        help="else the mean dense 10-min U-Net IoU from here",
    )
    parser.add_argument("--json", type=Path, help="results file (default interactive.json)")
    parser.add_argument("--report", action="store_true", help="only print the results of --json")
    add_training_options(parser)
    args = parser.parse_args()
    tag, options = tag_for(args), training_options(args)
    results = Results(args.json or Path("interactive-smoke.json" if args.max_images else "interactive.json"))
    ceilings = dense_ceilings(args)
    if args.report:
        report(results.cells, ceilings, tag)
        return

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; options {options or 'defaults'}",
        flush=True,
    )
    added = args.forest_strokes
    if added is None:
        added = planned_looks(args) * args.strokes_per_look

    def record(key: str, facts: dict, session, *session_args) -> None:
        print(key, flush=True)
        results.record(key, lambda: dict(facts, **session(*session_args)), describe)

    for seed in args.seeds:
        for name in args.datasets:
            d = load_dataset(args.data, name, args.max_images)
            if args.heldout_images:
                keep = args.heldout_images
                d.test_images, d.test_masks = d.test_images[:keep], d.test_masks[:keep]
            n = len(d.images) if not args.train_images else min(args.train_images, len(d.images))
            chosen = np.random.default_rng([seed, 9]).choice(len(d.images), n, replace=False)
            pairs = sorted(int(i) for i in chosen)
            start = initial_strokes([d.masks[p] for p in pairs], seed, args.start_strokes)
            setup = (
                f"{n} images x {args.start_strokes}/class, look every {args.look_every:g} s, "
                f"{args.strokes_per_look}/look"
            )
            for policy in args.policies:
                facts = dict(dataset=name, policy=policy, seed=seed, setup=setup, pairs=pairs)
                key = f"{name}/{policy}/{setup}/seed {seed}"
                record(
                    f"{key}/unet {args.minutes:g} min, limit {args.limit}" + (f" [{tag}]" if tag else ""),
                    dict(facts, method="unet", tag=tag),
                    network_session,
                    d,
                    pairs,
                    start,
                    policy,
                    seed,
                    args,
                    options,
                )
                if not args.no_forest:
                    record(
                        f"{key}/random forest {added} strokes",
                        dict(facts, method="random forest", tag=""),
                        forest_session,
                        d,
                        pairs,
                        start,
                        policy,
                        seed,
                        added,
                        args,
                    )
    report(results.cells, ceilings, tag)


def describe(r: dict) -> str:
    rows = r.get("checks") or r.get("records") or [{}]
    return f"last IoU {rows[-1].get('iou', float('nan')):.3f} at {rows[-1].get('strokes')} strokes"


def dense_ceilings(args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    if args.accuracy_json.exists():
        for r in Results(args.accuracy_json).cells.values():
            if (r.get("method"), r.get("labels"), r.get("budget"), r.get("tag")) == (
                "unet",
                "dense",
                10.0,
                "",
            ):
                out.setdefault(r["dataset"], []).append(r["iou"])
    ceilings = {k: float(np.mean(v)) for k, v in out.items()}
    for item in args.ceiling:
        name, _, value = item.partition("=")
        ceilings[name] = float(value)
    return ceilings


def forest_at(records: list[dict], strokes: int) -> float | None:
    """The forest's IoU with at most ``strokes`` strokes (its latest fit by then)."""
    below = [r["iou"] for r in records if r["strokes"] <= strokes]
    return below[-1] if below else None


def report(cells: dict[str, dict], ceilings: dict[str, float], tag: str) -> None:
    forests = {
        (r["dataset"], r["policy"], r["setup"], r["seed"]): r
        for r in cells.values()
        if r.get("method") == "random forest"
    }
    lines = []
    for r in cells.values():
        if r.get("method") != "unet" or r.get("tag", "") != tag:
            continue
        forest = forests.get((r["dataset"], r["policy"], r["setup"], r["seed"]), {}).get("records", [])
        print(
            f"\n{r['dataset']} / policy {r['policy']} / seed {r['seed']}: {r['setup']}; "
            f"{r['iterations']} iterations in {r['train_s']:.0f} s of training; "
            f"user looks {r['look_s']:.1f} s "
            f"({r['looks']} looks), held-out scoring {r['eval_s']:.1f} s"
            + ("; the run ENDED EARLY (max_minutes counts the pauses?)" if r.get("ended_early") else "")
        )
        print(f"{'train s':>8}{'iteration':>10}{'strokes':>8}{'IoU':>7}{'forest':>8}")
        for c in r["checks"]:
            f = forest_at(forest, c["strokes"])
            print(
                f"{c['train_s']:>8.0f}{c['iteration']:>10}{c['strokes']:>8}{c['iou']:>7.3f}"
                + (f"{f:>8.3f}" if f is not None else f"{'-':>8}")
            )
        if forest:
            print(
                "forest by strokes: "
                + ", ".join(f"{x['strokes']}: {x['iou']:.3f}" for x in forest)
                + f" (fit {np.mean([x['fit_s'] for x in forest]):.1f} s each)"
            )
        lines.append(session_summary(r, forest, ceilings.get(r["dataset"])))
    print("\nsummary: " + (" | ".join(lines) if lines else "no sessions"))


def session_summary(r: dict, forest: list[dict], ceiling: float | None) -> str:
    head = f"{r['dataset']}/{r['policy']}/seed {r['seed']}"
    checks = r["checks"]
    parts = []
    if ceiling:
        target = 0.9 * ceiling
        ours = next((c for c in checks if c["iou"] >= target), None)
        best = max(checks, key=lambda c: c["iou"]) if checks else None
        parts.append(
            f"90 % of dense ({target:.3f}): ours "
            + (
                f"at {ours['strokes']} strokes, {ours['train_s']:.0f} s"
                if ours
                else f"not reached in {checks[-1]['strokes'] if checks else 0} strokes"
                + (f" (best {best['iou']:.3f})" if best else "")
            )
        )
        if forest:
            theirs = next((x for x in forest if x["iou"] >= target), None)
            parts.append(
                "forest "
                + (
                    f"at {theirs['strokes']} strokes"
                    if theirs
                    else f"not reached in {forest[-1]['strokes']} strokes "
                    f"(best {max(x['iou'] for x in forest):.3f})"
                )
            )
    else:
        parts.append("no dense ceiling (pass --ceiling or --accuracy-json)")
    if forest:
        beat = next(
            (c for c in checks if (f := forest_at(forest, c["strokes"])) is not None and c["iou"] >= f), None
        )
        parts.append(
            f"preview beats the forest's IoU within {beat['train_s']:.0f} s of Start"
            if beat
            else "preview never beats the forest's IoU"
        )
    return f"{head}: " + "; ".join(parts)


if __name__ == "__main__":
    main()
