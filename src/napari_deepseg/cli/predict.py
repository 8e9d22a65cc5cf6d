"""``napari-deepseg predict``: segment an image with a trained model.

Labels stream into a ``.tif`` (memory-mapped) or a ``.zarr`` / ``.ome.zarr`` store band by band,
and zarr / OME-Zarr images are read tile by tile, so neither needs to fit in memory. With
``--workers N`` or ``--scheduler ADDRESS`` the tiles are predicted on a dask.distributed cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..image_io import open_image, write_image

OUTPUT_SUFFIXES = (".tif", ".tiff", ".png", ".zarr", ".ome.zarr")


def add_parser(sub: Any) -> None:
    from ..prediction import TilingOptions
    from ..zarr_io import CHUNK

    p = sub.add_parser("predict", help="segment an image with a trained model")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--image", required=True, type=Path, help="TIFF, PNG/JPEG, .zarr or .ome.zarr image")
    p.add_argument("--output", required=True, type=Path, help="labels file (.tif, .png, .zarr or .ome.zarr)")
    p.add_argument("--level", type=int, default=0, help="level of a multiscale OME-Zarr image (0: full size)")
    p.add_argument(
        "--min-probability",
        type=float,
        default=0.0,
        help="pixels whose best class is less probable than this stay 0 (default 0)",
    )
    p.add_argument("--probabilities", type=Path, help="also write float32 probabilities (K, ...) as TIFF")
    tiling = TilingOptions()
    p.add_argument("--tile-size", type=int, default=tiling.tile_size)
    p.add_argument("--overlap", type=int, default=tiling.overlap)
    p.add_argument("--batch-size", type=int, default=tiling.batch_size, help="tiles per forward pass")
    p.add_argument("--device", default=None, help="default: the model's device (CPU) ")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument(
        "--mirroring",
        action="store_true",
        help="average each tile with its three mirror images (test-time augmentation; 4x the time)",
    )
    p.add_argument("--channel-axis", type=int, help="default: an OME-Zarr image's channel axis")
    p.add_argument("--chunk-size", type=int, default=CHUNK, help=f"zarr labels chunks (default {CHUNK})")
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", metavar="ADDRESS", help="predict on this dask.distributed scheduler")
    cluster.add_argument("--workers", type=int, help="predict on a local dask cluster of N processes")
    p.add_argument(
        "--block-size", type=int, default=4096, help="pixels per side of a cluster task (default 4096)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..image_io import TIFF_SUFFIXES, create_labels_file, remove_labels_file
    from ..prediction import CompactProbabilities, apply_threshold, label_dtype
    from ..segmentation_model import SegmentationModel

    model = SegmentationModel.load(args.model)
    _check_paths(args)
    opened = open_image(args.image, level=args.level)
    image = opened.data
    if args.channel_axis is None:
        args.channel_axis = opened.channel_axis
    options = dict(
        channel_axis=args.channel_axis,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        mirroring=args.mirroring,
    )
    _check_before_running(args, model, image, options)
    streamed = args.output.suffix.lower() in TIFF_SUFFIXES or _is_zarr(args.output)
    unit = "block" if args.scheduler or args.workers else "tile"
    created = False
    try:
        with _client(args) as client, tqdm(desc="predicting", unit=unit, file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            predict = _predictor(model, client, args)
            if args.probabilities:
                probabilities = model.predict_proba(image, progress=progress, **options)
                labels = apply_threshold(
                    CompactProbabilities.from_probabilities(probabilities), args.min_probability
                )
                write_image(args.output, labels)
            elif streamed:
                # Written band by band (block by block on a cluster): images larger than memory work.
                shape = model.view(image, args.channel_axis).labels_shape
                out = create_labels_file(
                    args.output, shape, label_dtype(model.num_classes), chunk=args.chunk_size, image=opened,
                    class_names=model.class_names,
                )  # fmt: skip
                created = True
                predict(image, min_probability=args.min_probability, out=out, progress=progress, **options)
                if isinstance(out, np.memmap):  # a TIFF from create_labels_file
                    out.flush()
                labels = out
            else:
                labels = predict(image, min_probability=args.min_probability, progress=progress, **options)
                write_image(args.output, labels)
    except BaseException:
        # Ctrl+C, out of memory: no half-written labels are left. Removed only once the client and
        # its local cluster are closed: a cluster task still running would write into it again.
        if created:
            del out  # a memory map must be closed before its file goes
            remove_labels_file(args.output)
        raise
    counts = class_counts(labels, model.class_names)
    print(f"wrote labels {tuple(labels.shape)} with classes {counts} to {args.output}")
    if args.probabilities:
        write_image(args.probabilities, probabilities)
        print(f"wrote probabilities {probabilities.shape} to {args.probabilities}")
    return 0


def _is_zarr(path: Path) -> bool:
    return path.name.lower().endswith(".zarr")


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    """The dask.distributed client of ``--scheduler`` / ``--workers``, or ``None``."""
    if not (args.scheduler or args.workers):
        yield None
        return
    from ..zarr_io import MissingZarrError, require

    try:
        require("--scheduler / --workers", ("distributed",))
    except MissingZarrError:
        raise MissingZarrError(
            "--scheduler / --workers need dask.distributed; install the cluster extra: "
            'pip install "napari-deepseg[cluster]"'
        ) from None
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if args.scheduler:
            client = stack.enter_context(Client(args.scheduler, timeout="30s"))
        else:
            cluster = LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None,
            )  # fmt: skip
            stack.enter_context(cluster)
            client = stack.enter_context(Client(cluster))
        yield client


def _predictor(model: Any, client: Any, args: argparse.Namespace) -> Any:
    """``model.predict``, or its cluster form with ``--block-size`` and one torch thread per core."""
    if client is None:
        return model.predict
    from ..cluster import predict_on_cluster
    from ..prediction import PredictionOptions

    threads = max(1, (os.cpu_count() or 1) // args.workers) if args.workers else None

    def predict(image: Any, *, min_probability: float, channel_axis: int | None, progress: Any,
                out: Any = None, **options: Any) -> Any:  # fmt: skip
        return predict_on_cluster(
            model, image, client, options=PredictionOptions(progress=progress).replace(**options),
            min_probability=min_probability, out=out, channel_axis=channel_axis,
            block_size=args.block_size, worker_threads=threads,
        )  # fmt: skip

    return predict


def _check_paths(args: argparse.Namespace) -> None:
    """Output and options that are wrong whatever the image holds."""
    name = args.output.name.lower()
    if not name.endswith(OUTPUT_SUFFIXES):
        suffix = args.output.suffix.lower()
        raise ValueError(
            f"unsupported output format {suffix!r} for {str(args.output)!r}; "
            "use .tif, .png, .zarr or .ome.zarr"
        )
    if _is_zarr(args.output):
        from ..zarr_io import check_replaceable

        check_replaceable(args.output)
    image = args.image.resolve()
    for option, path in (("--output", args.output), ("--probabilities", args.probabilities)):
        if path is not None and (path.resolve() == image or path.resolve() in image.parents):
            raise ValueError(f"{option} {str(path)!r} would overwrite the image {str(args.image)!r}")
    if (args.scheduler or args.workers) and args.probabilities:
        raise ValueError("--probabilities are not written on a cluster; leave out --scheduler / --workers")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    for option in ("chunk_size", "block_size"):
        if getattr(args, option) < 32:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 32, got {getattr(args, option)}")
    if args.level < 0:
        raise ValueError(f"--level must be 0 or more, got {args.level}")


def _check_before_running(args: argparse.Namespace, model: Any, image: Any, options: dict[str, Any]) -> None:
    """What can be checked before anything runs or is written, so that a bad image or option
    prints its one line and leaves no file behind."""
    from ..data.normalisation import finite_sample
    from ..image_io import TIFF_SUFFIXES
    from ..prediction import PredictionOptions

    suffix = args.output.suffix.lower()
    if args.probabilities and args.probabilities.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"--probabilities are written as TIFF (.tif), got {str(args.probabilities)!r}")
    if not 0 <= args.min_probability <= 1:  # also refuses NaN
        raise ValueError(f"--min-probability must be in [0, 1], got {args.min_probability}")
    view = model.view(image, args.channel_axis)
    if suffix == ".png" and len(view.labels_shape) != 2:
        raise ValueError(f"PNG output holds 2D labels only; use .tif for labels of shape {view.labels_shape}")
    if view.data.dtype.kind == "f":
        finite_sample(view.data)  # NaN / inf, on the pixels the normalisation reads
    PredictionOptions().replace(**{k: v for k, v in options.items() if k not in ("channel_axis", "device")})
    if args.device is not None:
        model.to(args.device)


def class_counts(labels: Any, names: Sequence[str]) -> str:
    """ "background: 60.0%, nucleus: 40.0%" (and the unclassified share, if any); read in bands
    of rows, so zarr labels are never loaded whole."""
    counts = np.zeros(len(names) + 1, np.int64)
    *leading, height, width = labels.shape
    rows = max(1, (1 << 24) // max(width, 1))  # bincount makes an int64 copy of each band
    for lead in np.ndindex(*leading):
        for r0 in range(0, height, rows):
            index = (*lead, slice(r0, r0 + rows))
            band = np.asarray(labels[index])
            counts += np.bincount(band.reshape(-1), minlength=len(names) + 1)
    parts = [f"{names[k - 1]}: {counts[k] / labels.size:.1%}" for k in range(1, len(names) + 1)]
    if counts[0]:
        parts.append(f"unclassified: {counts[0] / labels.size:.1%}")
    return ", ".join(parts)
