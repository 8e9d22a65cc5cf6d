"""Reading and writing the image files the CLI works on: TIFF, PNG/JPEG, zarr and OME-Zarr.

Large images are never read whole: an uncompressed TIFF is memory-mapped and a zarr / OME-Zarr
image opens as a dask array over its chunks (``zarr_io``), so prediction reads tile by tile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .zarr_io import ZarrImage, is_zarr_path, open_zarr_image

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr", ".ome.zarr")


def open_image(path: str | Path, *, level: int = 0) -> ZarrImage:
    """The image at ``path`` with what its file says about it (OME-Zarr axes and scale, hence
    the channel axis). ``level``: the multiscale level of an OME-Zarr image (0: full size)."""
    if is_zarr_path(path):
        return open_zarr_image(path, level)
    if level:
        raise ValueError(f"--level {level} needs a multiscale OME-Zarr image, not {str(path)!r}")
    return ZarrImage(read_image(path))


def read_image(path: str | Path, *, level: int = 0) -> Any:
    """Read a TIFF (memory-mapped when possible, so large files are read tile by tile), PNG/JPEG,
    or a zarr / OME-Zarr image (a lazy dask array; ``level`` of a multiscale image)."""
    path = Path(path)
    if is_zarr_path(path) or level:
        return open_image(path, level=level).data
    if path.is_dir():
        raise IsADirectoryError(f"image file {str(path)!r} is a directory, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            try:
                return tifffile.memmap(path, mode="r")
            except ValueError:  # compressed or otherwise not memory-mappable
                return tifffile.imread(path)
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except (OSError, ValueError) as err:
        # The reader's first line says why; imageio adds lines of plugin suggestions.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read image {str(path)!r}: {reason}") from None


def create_labels_file(
    path: str | Path,
    shape: tuple[int, ...],
    dtype: type,
    *,
    chunk: int | None = None,
    image: ZarrImage | None = None,
    class_names: tuple[str, ...] = (),
) -> Any:
    """A new file of ``shape`` for labels written band by band: an uncompressed TIFF mapped into
    memory, or a zarr array (``.zarr``; ``.ome.zarr``: an OME-Zarr labels image with ``image``'s
    axes) of ``chunk``-pixel chunks (``zarr_io.CHUNK`` by default)."""
    path = Path(path)
    if is_zarr_path(path):
        from .zarr_io import CHUNK, create_labels_store

        return create_labels_store(
            path, shape, dtype, chunk=chunk or CHUNK, image=image, class_names=class_names
        )
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"streamed labels need a .tif or .zarr file, got {str(path)!r}")
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    return tifffile.memmap(path, shape=shape, dtype=dtype)


def remove_labels_file(path: str | Path) -> None:
    """Remove what :func:`create_labels_file` made (a half-written result)."""
    path = Path(path)
    if is_zarr_path(path) and path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_image(path: str | Path, data: np.ndarray) -> Path:
    """Write labels or probabilities; TIFF for anything, PNG for 2D uint8/uint16 labels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        # minisblack: a (..., 3, H, W) stack of probabilities is not an RGB image.
        tifffile.imwrite(path, data, compression="zlib", photometric="minisblack")
    elif suffix == ".png":
        if data.ndim != 2 or data.dtype not in (np.uint8, np.uint16):
            raise ValueError(
                f"PNG output holds 2D 8/16-bit labels only; use .tif for {data.shape} {data.dtype}"
            )
        import imageio.v3 as iio

        iio.imwrite(path, data)
    else:
        raise ValueError(f"unsupported output format {suffix!r} for {str(path)!r}; use .tif or .png")
    return path
