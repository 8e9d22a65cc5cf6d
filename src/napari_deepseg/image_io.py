"""Reading and writing the image files the CLI works on (TIFF and PNG/JPEG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """Read a TIFF (memory-mapped when possible, so large files are read tile by tile) or PNG/JPEG."""
    path = Path(path)
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


def create_labels_file(path: str | Path, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A new uncompressed TIFF of ``shape`` mapped into memory, for labels written band by band."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"streamed labels need a .tif file, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return tifffile.memmap(path, shape=shape, dtype=dtype)


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
