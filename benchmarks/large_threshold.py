"""The minimum-probability slider on a large result on disk, in a shown napari viewer.

A 16384x16384 image is predicted by the Predict widget's large path (``predict_to_zarr``: the
compact result and its pyramid in a zarr store, 1024-pixel chunks; a 1x1-convolution network,
so the network is not what is timed). Its labels layer shows the lazy views; for three views of a
1500x950 canvas (the whole image, 1:4, 1:1 at the centre) the slider is moved --moves times and
each move is timed until napari has read, and so thresholded, what it shows (``replace_levels``,
as the widget does), and again until the canvas has drawn it. The reference is the threshold of
the whole array: band by band from the zarr store (what re-thresholding everything would cost),
and of the same compact result held in memory (537 MB at 16384²); and, in the same viewer, the
slider of the small-image path on a 4096x4096 result in memory (thresholded whole, as below
LARGE_PIXELS).

    xvfb-run -a python benchmarks/large_threshold.py [--size 16384] [--moves 20] [--store DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import torch
from napari._qt.qt_event_loop import get_qapp

from napari_deepseg import CompactProbabilities, SegmentationModel, apply_threshold
from napari_deepseg._qt import _large_labels, _results
from napari_deepseg.data.normalisation import DATASET, Normalisation

CANVAS = (950, 1500)  # rows, columns


def _image(size: int) -> np.ndarray:
    """A smooth uint8 field with some noise: nuclei-sized blobs the two classes split on."""
    rng = np.random.default_rng(0)
    y = np.arange(size, dtype=np.float32)[:, None]
    x = np.arange(size, dtype=np.float32)[None, :]
    image = np.empty((size, size), np.uint8)
    for r0 in range(0, size, 1024):
        band = 128 + 90 * np.sin(y[r0 : r0 + 1024] / 37.0) * np.cos(x / 53.0)
        band += rng.normal(0, 20, band.shape)
        image[r0 : r0 + 1024] = np.clip(band, 0, 255)
    return image


def _model() -> SegmentationModel:
    torch.manual_seed(0)
    network = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        network.weight[:] = torch.tensor([[[[4.0]]], [[[-4.0]]]])
        network.bias.zero_()
    return SegmentationModel(
        network.eval(),
        architecture="unet",
        encoder="resnet34",
        num_classes=2,
        normalisation=Normalisation((0.0,), (255.0,), mode=DATASET),
    )


def _p50_max(values: list[float]) -> str:
    return f"p50 {np.median(values):8.1f} ms   max {np.max(values):8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--full-moves", type=int, default=3, help="moves timed for the whole-array threshold")
    parser.add_argument(
        "--store", type=Path, default=None, help="folder for the zarr store (a temporary one)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(dir=args.store))
    image, model = _image(args.size), _model()
    start = time.perf_counter()
    large = _large_labels.predict_to_zarr(model, image, None, None, None, path=folder / "result.zarr")
    predicted = time.perf_counter() - start
    del image
    shapes = [tuple(level.shape) for level in large.levels]
    print(f"{args.size}x{args.size}: compact result and pyramid {shapes} written in {predicted:.1f} s")

    viewer = napari.Viewer()
    app = get_qapp()
    canvas = viewer.window._qt_viewer.canvas
    canvas.native.setFixedSize(CANVAS[1], CANVAS[0])
    app.processEvents()
    layer = viewer.add_labels(large.labels(0.5), name="large", opacity=0.6)
    rng = np.random.default_rng(1)
    views = {
        "whole image": (None, None),
        "1:4 centre": ((args.size / 2, args.size / 2), 0.25),
        "1:1 centre": ((args.size / 2, args.size / 2), 1.0),
    }
    print(f"canvas {tuple(int(n) for n in canvas._current_viewbox_size[::-1])} (rows, columns)")
    for name, (center, zoom) in views.items():
        if center is None:
            viewer.reset_view()
        else:
            viewer.scene.camera.center, viewer.scene.camera.zoom = center, zoom
        for _ in range(5):  # the draws that pick the level and the visible chunks
            app.processEvents()
            canvas.on_draw(None)
        sliced, drawn, pixels = [], [], 0
        for t in rng.uniform(0.5, 1.0, args.moves):  # two classes: every best probability >= 0.5
            start = time.perf_counter()
            _results.replace_levels(layer, large.labels(float(t)))
            sliced.append((time.perf_counter() - start) * 1000)
            canvas.native.repaint()  # the draw, synchronously
            app.processEvents()
            drawn.append((time.perf_counter() - start) * 1000)
            pixels = int(np.prod(np.asarray(layer._slice.image.raw).shape))
        print(
            f"{name:<12} level {layer.data_level} ({pixels / 1e6:.1f} M pixels read)   "
            f"sliced {_p50_max(sliced)}   drawn {_p50_max(drawn)}"
        )
    # The small-image path in the same viewer: level 2 (4096x4096 of 16384) in memory, thresholded
    # whole into a plain Labels layer, as the widget does below LARGE_PIXELS.
    layer.visible = False
    small = large.levels[2].window((slice(None), slice(None)))
    plain = viewer.add_labels(apply_threshold(small, 0.5), name="4096 in memory", opacity=0.6)
    viewer.reset_view()
    app.processEvents()
    sliced, drawn = [], []
    for t in rng.uniform(0.5, 1.0, args.moves):
        start = time.perf_counter()
        plain.data = apply_threshold(small, float(t))
        sliced.append((time.perf_counter() - start) * 1000)
        canvas.native.repaint()
        app.processEvents()
        drawn.append((time.perf_counter() - start) * 1000)
    side, pixels = f"{small.shape[0]}² numpy", small.best_class.size / 1e6
    print(f"{side:<12} ({pixels:.1f} M pixels, whole)   sliced {_p50_max(sliced)}   drawn {_p50_max(drawn)}")
    viewer.close()

    full: dict[str, list[float]] = {"zarr, band by band": [], "numpy in memory": []}
    level0 = large.levels[0]
    in_memory = CompactProbabilities(level0.best_class[:], level0.best_probability[:], 2)
    for t in rng.uniform(0.5, 1.0, args.full_moves):
        for name, compact in (("zarr, band by band", level0), ("numpy in memory", in_memory)):
            start = time.perf_counter()
            apply_threshold(compact, float(t))
            full[name].append((time.perf_counter() - start) * 1000)
    for name, values in full.items():
        print(f"whole-array threshold, {name:<20} {_p50_max(values)}")
    stored = sum(f.stat().st_size for f in large.path.rglob("*") if f.is_file())
    print(f"store: {large.path} ({stored / 2**20:.0f} MB)")
    _large_labels._remove(folder)


if __name__ == "__main__":
    main()
