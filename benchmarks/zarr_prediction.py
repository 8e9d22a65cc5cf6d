"""Prediction from an OME-Zarr image into zarr labels, and on a dask.distributed cluster.

Modes (one per run, each in this process; peak memory is VmHWM and the peak of RssAnon, sampled):

- ``--zarr`` (default): a ``--size``² uint16 OME-Zarr (1024² chunks, written chunk by chunk into
  ``--workdir``) through ``napari-deepseg predict`` into ``labels.zarr``: MP/s and peak memory.
  The issue's row is 32768²; ``--size 8192`` takes ~1/16 of its time.
- ``--workers N``: the same image through a ``LocalCluster`` of N worker processes (one thread
  each, ``cpu_count // N`` torch threads), the workers writing the labels, as ``predict
  --workers N`` does: MP/s timed after the cluster's start-up (reported apart).
- ``--overhead``: tasks per second for blocks of 32² pixels with a 1-channel U-Net (ResNet-18) on
  a ``LocalCluster`` of ``--workers`` processes: what a task costs besides the network.

Measured on a 2-core AMX CPU (default U-Net, ResNet-34, precision auto): 8192² uint16 OME-Zarr
(128 MiB) to zarr labels in 132 s, 0.51 MP/s, peak RssAnon 1363 MiB (VmHWM 1719 MiB); 4096²: 0.58
MP/s, 1207 MiB. Extrapolated to 32768² (not run): ~35 min, and ~1.6 GiB, since the blending band
and a row of tiles grow with the width (~0.3 GiB more at 32768) and nothing grows with the height.

    python benchmarks/zarr_prediction.py --zarr --size 8192 [--workdir /tmp/bench]
    python benchmarks/zarr_prediction.py --workers 2 --size 2048 --block-size 1024
    python benchmarks/zarr_prediction.py --overhead --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import torch

from napari_deepseg import SegmentationModel
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.models import build_model


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


class PeakAnon:
    """The peak of RssAnon, sampled every 20 ms in a thread."""

    def __enter__(self) -> PeakAnon:
        self.peak, self._stop = _status("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _status("RssAnon"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_ome_zarr(path: Path, size: int) -> None:
    """A uint16 OME-Zarr image of bright discs on noise, written 1024 rows at a time."""
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    group = zarr.open_group(str(path), mode="w")
    array = group.create_array("0", shape=(size, size), dtype="u2", chunks=(1024, 1024))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:size]
    for y0 in range(0, size, 1024):
        rows = min(1024, size - y0)
        discs = (np.sin((yy[:rows] + y0) / 23.0) * np.sin(xx[:rows] / 29.0)) > 0.6
        array[y0 : y0 + rows] = (discs * 2000 + rng.integers(0, 400, (rows, size))).astype(np.uint16)
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}]
    write_multiscales_metadata(group, datasets, axes=["y", "x"])


def model_file(path: Path, encoder: str = "resnet34") -> Path:
    torch.manual_seed(0)
    network = build_model("unet", num_classes=2, in_channels=1, encoder=encoder).eval()
    norm = Normalisation((0.0,), (1.0,), mode="per_image")
    SegmentationModel(network, architecture="unet", encoder=encoder, num_classes=2, normalisation=norm).save(
        path
    )
    return path


def run_cli(workdir: Path, size: int) -> dict:
    from napari_deepseg.cli import main

    image, labels = workdir / f"image{size}.ome.zarr", workdir / "labels.zarr"
    if not image.exists():
        write_ome_zarr(image, size)
    model = model_file(workdir / "model.safetensors")
    shutil.rmtree(labels, ignore_errors=True)
    with PeakAnon() as anon:
        start = time.perf_counter()
        assert main(["predict", "--model", str(model), "--image", str(image), "--output", str(labels)]) == 0
        seconds = time.perf_counter() - start
    return {
        "mode": "zarr",
        "size": size,
        "seconds": round(seconds, 1),
        "MP/s": round(size * size / 1e6 / seconds, 2),
        "peak_anon_MiB": round(anon.peak / 2**20),
        "VmHWM_MiB": round(_status("VmHWM") / 2**20),
        "image_MiB": round(size * size * 2 / 2**20),
    }


def run_workers(workdir: Path, size: int, workers: int, block: int) -> dict:
    """What ``predict --workers N`` runs, timed after the LocalCluster has started."""
    from distributed import Client, LocalCluster

    from napari_deepseg.cluster import predict_on_cluster
    from napari_deepseg.image_io import create_labels_file, open_image

    image = workdir / f"image{size}.ome.zarr"
    if not image.exists():
        write_ome_zarr(image, size)
    model = SegmentationModel.load(model_file(workdir / "model.safetensors"))
    opened = open_image(image)
    start = time.perf_counter()
    local_cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    with local_cluster, Client(local_cluster) as client:
        startup = time.perf_counter() - start
        out = create_labels_file(workdir / "labels.zarr", (size, size), np.uint8, chunk=min(block, 1024))
        start = time.perf_counter()
        predict_on_cluster(model, opened.data, client, out=out, block_size=block,
                           worker_threads=max(1, (os.cpu_count() or 1) // workers))  # fmt: skip
        seconds = time.perf_counter() - start
    return {"mode": f"workers={workers}", "size": size, "block": block, "startup_s": round(startup, 1),
            "seconds": round(seconds, 1), "MP/s": round(size * size / 1e6 / seconds, 2)}  # fmt: skip


def run_overhead(workdir: Path, workers: int, tasks: int = 200) -> dict:
    from distributed import Client, LocalCluster

    from napari_deepseg import cluster
    from napari_deepseg.prediction import PredictionOptions

    model = SegmentationModel.load(model_file(workdir / "tiny.safetensors", "resnet18"))
    side = int(np.sqrt(tasks)) * 32
    image = np.random.default_rng(0).random((side, side), dtype=np.float32)
    options = PredictionOptions().replace(tile_size=32, overlap=0, precision="fp32")
    local_cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    with local_cluster, Client(local_cluster) as client:
        cluster.predict_on_cluster(model, image[:64, :64], client, options=options, block_size=32)  # warm
        start = time.perf_counter()
        cluster.predict_on_cluster(model, image, client, options=options, block_size=32)
        seconds = time.perf_counter() - start
    count = (side // 32) ** 2
    start = time.perf_counter()
    model.predict(image, options=options)
    local = time.perf_counter() - start
    return {"mode": "overhead", "workers": workers, "tasks": count, "tasks/s": round(count / seconds, 1),
            "local_tiles/s": round(count / local, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zarr", action="store_true", help="OME-Zarr in, zarr out, locally (the default)")
    parser.add_argument("--workers", type=int, help="on a LocalCluster of N processes")
    parser.add_argument("--overhead", action="store_true", help="tasks/s with a trivial model")
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--block-size", type=int, default=4096, help="of a cluster task (--workers)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/napari-deepseg-zarr-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.overhead:
        result = run_overhead(args.workdir, args.workers or 2)
    elif args.workers and not args.zarr:
        result = run_workers(args.workdir, args.size, args.workers, args.block_size)
    else:
        result = run_cli(args.workdir, args.size)
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
