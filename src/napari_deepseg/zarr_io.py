"""zarr and OME-Zarr images, read lazily and written chunk by chunk (the optional ``zarr`` extra).

Images open as dask arrays over the zarr array, so prediction reads one tile at a time; labels
are written into a zarr array of ``(1, ..., 1, CHUNK, CHUNK)`` chunks, band by band. An output
ending in ``.ome.zarr`` is an OME-Zarr labels image (``multiscales`` with one level plus
``image-label``), with the axes and pixel scale of the image it segments.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTRA = 'pip install "napari-deepseg[zarr]"'
CHUNK = 1024
# Axis names given to labels of images that carry none (TIFF, plain zarr), by dimensions.
DEFAULT_AXES = {2: ("y", "x"), 3: ("z", "y", "x"), 4: ("t", "z", "y", "x")}
_METADATA_FILES = ("zarr.json", ".zarray", ".zgroup")


class MissingZarrError(ImportError):
    """zarr (or dask, ome-zarr) is not installed; the message names the extra to install."""


def require(what: str, modules: tuple[str, ...] = ("zarr", "dask")) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingZarrError(
            f"{what} needs {', '.join(missing)}, which is not installed; install the zarr extra: {EXTRA}"
        )
    if "zarr" in modules:  # napari environments often carry zarr 2, whose API differs
        version = importlib.metadata.version("zarr")
        if int(version.split(".")[0]) < 3:
            raise MissingZarrError(f"{what} needs zarr 3 or later, found zarr {version}: {EXTRA} --upgrade")


def is_zarr_path(path: str | Path) -> bool:
    """A ``.zarr`` name, or a folder holding zarr metadata."""
    path = Path(path)
    if path.name.lower().endswith(".zarr"):
        return True
    return path.is_dir() and any((path / name).is_file() for name in _METADATA_FILES)


def is_ome_zarr_path(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(".ome.zarr")


@dataclass(frozen=True)
class ZarrImage:
    """An opened zarr image: ``data`` is a dask array over the stored chunks (nothing read yet).

    Attributes
    ----------
    axes
        OME-Zarr axes (dicts with ``name`` and ``type``), or ``None`` for a plain zarr array.
    scale
        The pixel scale of the level read, one value per axis (``None`` without OME metadata).
    channel_axis
        The axis of type ``channel`` (or named ``c``), if any.
    """

    data: Any
    axes: tuple[dict[str, Any], ...] | None = None
    scale: tuple[float, ...] | None = None

    @property
    def channel_axis(self) -> int | None:
        for i, axis in enumerate(self.axes or ()):
            if axis.get("type") == "channel" or axis.get("name") == "c":
                return i
        return None


def open_zarr_image(path: str | Path, level: int = 0) -> ZarrImage:
    """Open a zarr array, or level ``level`` of an OME-Zarr multiscale image, lazily."""
    require(f"reading {str(path)!r}")
    import dask.array as da
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    try:
        node = zarr.open(store=str(path.resolve()), mode="r")
    except Exception as err:  # zarr raises its own errors for folders that are no zarr store
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read zarr image {str(path)!r}: {reason}") from None
    if isinstance(node, zarr.Array):
        if level:
            raise ValueError(f"{str(path)!r} is a single zarr array: it has no --level {level}")
        return ZarrImage(da.from_zarr(node))
    multiscales = _multiscales(dict(node.attrs))
    if multiscales is None:
        arrays = sorted(name for name, _ in node.arrays())
        if len(arrays) == 1 and not level:
            return ZarrImage(da.from_zarr(node[arrays[0]]))
        raise ValueError(
            f"{str(path)!r} is a zarr group without OME-Zarr multiscales; name one of its arrays "
            f"({', '.join(arrays) or 'none'}) as {str(path / 'NAME')!r}"
        )
    datasets = multiscales[0]["datasets"]
    if not 0 <= level < len(datasets):
        raise ValueError(f"{str(path)!r} has levels 0 to {len(datasets) - 1}, not {level}")
    dataset = datasets[level]
    array = node[dataset["path"]]
    if not isinstance(array, zarr.Array):
        raise ValueError(f"{str(path)!r}: level {level} ({dataset['path']!r}) is not a zarr array")
    axes = tuple(
        a if isinstance(a, dict) else {"name": a}  # OME-Zarr 0.3 names axes by string
        for a in multiscales[0].get("axes", ())
    )
    scale = next(
        (t["scale"] for t in dataset.get("coordinateTransformations", ()) if t.get("type") == "scale"), None
    )
    if axes and len(axes) != array.ndim:
        raise ValueError(f"{str(path)!r}: {len(axes)} axes in the metadata for a {array.ndim}D array")
    return ZarrImage(da.from_zarr(array), axes or None, tuple(float(s) for s in scale) if scale else None)


def _multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    found = attrs.get("ome", attrs).get("multiscales")  # 0.5 nests the metadata under "ome"
    return found if isinstance(found, list) and found else None


def check_replaceable(path: str | Path) -> None:
    """Refuse to replace anything at ``path`` but a zarr store."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and any((path / n).is_file() for n in _METADATA_FILES)):
        raise ValueError(f"{str(path)!r} exists and is not a zarr store: choose another --output")


def labels_axes(image: ZarrImage | None, ndim: int) -> tuple[tuple[dict[str, Any], ...], tuple[float, ...]]:
    """Axes and scale of labels with ``ndim`` dimensions for ``image``: its own, less the channel
    axis; ``DEFAULT_AXES`` (scale 1) for images without OME metadata."""
    if image is not None and image.axes is not None:
        keep = [i for i in range(len(image.axes)) if i != image.channel_axis]
        if len(keep) == ndim:
            scale = image.scale or (1.0,) * len(image.axes)
            return tuple(image.axes[i] for i in keep), tuple(scale[i] for i in keep)
    if ndim not in DEFAULT_AXES:
        raise ValueError(f"OME-Zarr labels have 2 to 4 axes besides channels, these have {ndim}")
    names = DEFAULT_AXES[ndim]
    return tuple({"name": n, "type": "time" if n == "t" else "space"} for n in names), (1.0,) * ndim


def create_labels_store(
    path: str | Path,
    shape: tuple[int, ...],
    dtype: Any,
    *,
    chunk: int = CHUNK,
    image: ZarrImage | None = None,
    class_names: tuple[str, ...] = (),
) -> Any:
    """A new zarr array of ``shape`` (filled with 0) to write labels into, chunks of ``chunk``
    pixels per side and 1 along the leading axes. ``.ome.zarr``: an OME-Zarr labels image at level
    ``0``, with ``image``'s axes and scale (less the channel axis). Replaces an existing zarr
    store at ``path``; refuses any other existing folder or file there."""
    require(f"writing {str(path)!r}", ("zarr", "ome_zarr") if is_ome_zarr_path(path) else ("zarr",))
    import zarr

    path = Path(path).resolve()
    check_replaceable(path)
    chunks = (1,) * (len(shape) - 2) + (min(chunk, shape[-2]), min(chunk, shape[-1]))
    classes = {"class_names": list(class_names)}
    if not is_ome_zarr_path(path):
        return zarr.create_array(
            store=str(path), shape=shape, dtype=dtype, chunks=chunks, fill_value=0, overwrite=True,
            attributes={"napari-deepseg": classes},
        )  # fmt: skip
    from ome_zarr.format import CurrentFormat
    from ome_zarr.writer import add_metadata, write_multiscales_metadata

    axes, scale = labels_axes(image, len(shape))
    group = zarr.open_group(store=str(path), mode="w")
    array = group.create_array(name="0", shape=shape, dtype=dtype, chunks=chunks, fill_value=0)
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(scale)}]}]
    write_multiscales_metadata(group, datasets, axes=[dict(a) for a in axes], name=path.name)
    properties = [{"label-value": k, "class": name} for k, name in enumerate(class_names, start=1)]
    add_metadata(group, {"image-label": {"version": CurrentFormat().version, "properties": properties}})
    group.attrs["napari-deepseg"] = classes
    return array
