"""Tiled prediction speed and memory with the default U-Net (ResNet-18 since 2026-12-02; 3 classes, RGB).

For each image size, in a fresh process (so peak memory is that size's own):
- end to end: ``SegmentationModel.predict`` from the image to uint8 labels with the default
  tiling and precision; megapixels per second of image;
- model only: the same number of tiles of the same size through the network prediction runs
  (BatchNorms folded, channels_last on the CPU) alone, batches of pre-normalised tensors,
  measured before and after the end-to-end run; stitching overhead =
  end-to-end time / model-only time - 1 (reading, normalising, blending, argmax, writing);
- tile redundancy: pixels the network computes / image pixels (the cost of the overlap);
- peak memory: VmHWM (all resident pages, including file-backed pages of memory-mapped input and
  output that the kernel can drop at will) and the peak of RssAnon (the process's own memory),
  sampled every 20 ms.

The 16384x16384 image is a memory-mapped TIFF on disk (``--workdir``) and the labels go to
another, so the whole image is never in memory. ``--sweep`` measures model-only MP/s for tile
sizes and batch sizes instead (how the defaults were chosen).

    python benchmarks/prediction.py [--sizes 4096 16384] [--workdir /tmp] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from napari_deepseg import SegmentationModel
from napari_deepseg._device import resolve_precision, use_channels_last
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.models import architecture_spec, build_model
from napari_deepseg.prediction import TilingOptions

try:
    from napari_deepseg.prediction import tile_layout
except ImportError:  # engines before 2026-11-22 (for before/after runs): fixed-size tiles
    from napari_deepseg.prediction import tile_starts

    def tile_layout(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
        return min(tile, length), tile_starts(length, tile, overlap)


CLASSES = 3


def default_model() -> SegmentationModel:
    torch.manual_seed(0)
    module = build_model("unet", num_classes=CLASSES, in_channels=3).eval()
    return SegmentationModel(
        module,
        architecture="unet",
        encoder=architecture_spec("unet").default_encoder,
        num_classes=CLASSES,
        normalisation=Normalisation((0.0,) * 3, (255.0,) * 3),
    )


def textured_rows(rows: int, width: int, y0: int) -> np.ndarray:
    """Deterministic RGB texture (blobs on a gradient) for rows y0..y0+rows."""
    y, x = np.mgrid[y0 : y0 + rows, 0:width].astype(np.float32)
    base = 128 + 60 * np.sin(x / 37.0) * np.cos(y / 53.0)
    return np.stack([base, base[::-1] * 0.8, 255 - base], axis=-1).clip(0, 255).astype(np.uint8)


def make_image(size: int, workdir: Path | None) -> np.ndarray:
    if workdir is None:
        return textured_rows(size, size, 0)
    import tifffile

    path = workdir / f"deepseg_bench_{size}.tif"
    image = tifffile.memmap(path, shape=(size, size, 3), dtype=np.uint8)
    for y0 in range(0, size, 1024):
        image[y0 : y0 + 1024] = textured_rows(min(1024, size - y0), size, y0)
    image.flush()
    del image
    return tifffile.memmap(path, mode="r")


class MemorySampler(threading.Thread):
    """Peak RssAnon (the process's own pages) sampled from /proc/self/status."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak_anon_mb, self.running = interval, 0.0, True

    @staticmethod
    def status_mb(field: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def run(self) -> None:
        while self.running:
            self.peak_anon_mb = max(self.peak_anon_mb, self.status_mb("RssAnon"))
            time.sleep(self.interval)


def model_only_seconds_per_batch(
    model: SegmentationModel, tile: tuple[int, int], batch: int, repeats: int
) -> float:
    device = torch.device("cpu")
    dtype = resolve_precision("auto", device)
    try:  # what prediction runs since 2026-12-01: BatchNorms folded, channels_last on the CPU
        from napari_deepseg.models._folding import inference_network

        network, memory_format = inference_network(model.module), torch.channels_last
    except ImportError:
        network = model.module
        memory_format = torch.channels_last if use_channels_last(device, dtype) else torch.contiguous_format
    x = torch.randn(batch, 3, *tile).to(memory_format=memory_format)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
        network(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            network(x).float().softmax(dim=1)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(size: int, workdir: Path | None, tiling: TilingOptions) -> dict:
    model = default_model()
    sampler = MemorySampler()
    sampler.start()
    image = make_image(size, workdir)
    if workdir is not None:
        import tifffile

        out = tifffile.memmap(
            workdir / f"deepseg_bench_{size}_labels.tif", shape=(size, size), dtype=np.uint8
        )
    else:
        out = np.empty((size, size), np.uint8)
    th, starts = tile_layout(size, tiling.tile_size, tiling.overlap)
    tw = th
    tiles = len(starts) ** 2
    batches = -(-tiles // tiling.batch_size)
    repeats = min(batches, 5)
    before = model_only_seconds_per_batch(model, (th, tw), tiling.batch_size, repeats)
    start = time.perf_counter()
    options = dict(tile_size=tiling.tile_size, overlap=tiling.overlap, batch_size=tiling.batch_size)
    try:
        model.predict(image, out=out, **options)
    except TypeError:  # engines before predict(out=...): labels held in memory, then copied
        out[:] = model.predict(image, **options)
    e2e = time.perf_counter() - start
    after = model_only_seconds_per_batch(model, (th, tw), tiling.batch_size, repeats)
    sampler.running = False
    model_only = np.median([before, after]) * tiles / tiling.batch_size
    return dict(
        size=size,
        tiles=tiles,
        tile=th,
        e2e_s=e2e,
        mp_per_s=size * size / 1e6 / e2e,
        model_only_s=model_only,
        stitching_overhead=e2e / model_only - 1,
        redundancy=tiles * th * tw / size**2,
        vmhwm_mb=MemorySampler.status_mb("VmHWM"),
        peak_anon_mb=sampler.peak_anon_mb,
        labels_checksum=int(np.asarray(out[::97, ::89]).sum()),
    )


def sweep() -> None:
    model = default_model()
    print(f"{'tile':>6}{'batch':>7}{'MP/s (model only)':>19}")
    for tile in (256, 512, 768, 1024, 1536):
        for batch in (1, 4):
            if tile * tile * batch > 1536 * 1536:
                continue
            t = model_only_seconds_per_batch(model, (tile, tile), batch, 3)
            print(f"{tile:>6}{batch:>7}{batch * tile * tile / 1e6 / t:>19.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[4096, 16384])
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp"), help="where the memory-mapped TIFFs of sizes > 8192 go"
    )
    parser.add_argument("--tile-size", type=int, default=None, help="default: the engine's")
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    defaults = TilingOptions()
    tiling = TilingOptions(
        args.tile_size or defaults.tile_size,
        defaults.overlap if args.overlap is None else args.overlap,
        args.batch_size or defaults.batch_size,
    )
    if args.sweep:
        sweep()
        return
    if args.child:
        workdir = args.workdir if args.child > 8192 else None
        print(json.dumps(measure(args.child, workdir, tiling)))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision "
        f"{resolve_precision('auto', torch.device('cpu'))}, tile {tiling.tile_size}, "
        f"overlap {tiling.overlap}, batch {tiling.batch_size}"
    )
    rows = []
    for size in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(size),
            "--workdir",
            str(args.workdir),
            "--tile-size",
            str(tiling.tile_size),
            "--overlap",
            str(tiling.overlap),
            "--batch-size",
            str(tiling.batch_size),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if done.returncode:
            sys.exit(done.stderr)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"{'image':>12}{'tiles':>7}{'s':>8}{'MP/s':>7}{'model s':>9}{'stitching':>10}"
        f"{'redundancy':>11}{'VmHWM':>9}{'anon peak':>10}"
    )
    for r in rows:
        print(
            f"{r['size']:>6}x{r['size']:<5}{r['tiles']:>7}{r['e2e_s']:>8.1f}{r['mp_per_s']:>7.2f}"
            f"{r['model_only_s']:>9.1f}{r['stitching_overhead']:>+10.0%}{r['redundancy']:>10.2f}x"
            f"{r['vmhwm_mb']:>7.0f}MB{r['peak_anon_mb']:>8.0f}MB"
        )
    worst = min(rows, key=lambda r: r["mp_per_s"])
    print(
        f"\nsummary: {worst['mp_per_s']:.2f}-{max(r['mp_per_s'] for r in rows):.2f} MP/s end to end "
        f"(target >= 1.5), stitching overhead <= {max(r['stitching_overhead'] for r in rows):.0%} "
        f"(target <= 25 %), peak own memory {max(r['peak_anon_mb'] for r in rows) / 1024:.2f} GB "
        f"(target <= 1.5 GB at 16k, independent of size)"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
