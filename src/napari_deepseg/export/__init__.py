"""Export a trained model for other tools: TorchScript, ONNX, or a bioimage.io model package.

Every export holds the network followed by the softmax: it takes the network input *after*
normalisation, float32 (N, C, H, W) with H and W a multiple of the size divisor (32) and at least
twice it (64), and returns probabilities float32 (N, K, H, W), channel ``k - 1`` for class ``k``.
The bioimage.io package declares the normalisation as its pre-processing, so it takes raw images.
Each export is run on a test tile and compared with the engine's prediction before anything is
written: a difference raises :class:`ExportError` and leaves no file. ONNX and bioimage.io need
the ``export`` extra (``pip install "napari-deepseg[export]"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._safetensors_io import write_atomically
from ._contract import (
    ExportError,
    InputContract,
    MissingExportDependencyError,
    cpu_network,
    export_metadata,
    input_contract,
    make_test_tile,
    require,
)

if TYPE_CHECKING:
    from ..segmentation_model import SegmentationModel

__all__ = ["FORMATS", "ExportError", "InputContract", "MissingExportDependencyError", "export_model"]

# Format -> file name endings it is written under.
FORMATS: dict[str, tuple[str, ...]] = {
    "torchscript": (".pt", ".pth", ".ts"),
    "onnx": (".onnx",),
    "bioimageio": (".zip",),
}
_ONNX = ("onnx", "onnxscript", "onnxruntime")
# Format -> (its name for people, the optional packages it needs).
REQUIREMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torchscript": ("TorchScript", ()),
    "onnx": ("ONNX", _ONNX),
    "bioimageio": ("bioimage.io", (*_ONNX, "bioimageio.spec", "bioimageio.core")),
}


def export_model(
    model: SegmentationModel,
    path: str | Path,
    format: str,  # noqa: A002 (the name the issue and the CLI use)
    *,
    image: Any = None,
    channel_axis: int | None = None,
    authors: Sequence[str | Mapping[str, str]] | None = None,
    license: str = "BSD-3-Clause",  # noqa: A002
    name: str | None = None,
    description: str | None = None,
) -> Path:
    """Write ``model`` to ``path`` as ``format`` (``"torchscript"``, ``"onnx"``, ``"bioimageio"``).

    Parameters
    ----------
    image
        An image (the layout :meth:`~napari_deepseg.SegmentationModel.predict` takes) whose
        centre, at most 256 x 256, is the test tile; default: a bundled sample with the model's
        channels (1: fluorescence, 3: H&E), else smooth noise.
    authors, license, name, description
        bioimage.io only: names (or dicts with ``name``, ``affiliation``, ``orcid``,
        ``github_user``), an SPDX license id, and the package's name and description.

    Raises
    ------
    ExportError
        An unknown format, a wrong suffix, a test image too small, or an export that does not
        match the engine; nothing is written.
    MissingExportDependencyError
        ONNX / bioimage.io without the ``export`` extra.
    """
    path = Path(path)
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if path.suffix.lower() not in FORMATS[format]:
        raise ExportError(
            f"the {format} export is written to a {' / '.join(FORMATS[format])} file, got {str(path)!r}"
        )
    if not path.parent.is_dir():
        raise ExportError(f"the folder of {str(path)!r} does not exist")
    require(*REQUIREMENTS[format])
    tile = make_test_tile(model, image, channel_axis=channel_axis)
    network = cpu_network(model)
    contract = input_contract(model.module)
    metadata = export_metadata(model)
    try:
        return _export(
            format, model, path, network, tile, contract, metadata, authors, license, name, description
        )
    except (ExportError, ImportError, OSError):
        raise
    except Exception as err:  # the exporter's own failure (torch.onnx, jit, bioimageio): one message
        first = (str(err) or type(err).__name__).strip().splitlines()[0]
        raise ExportError(
            f"the {format} exporter failed on this network ({type(err).__name__}: {first})"
        ) from err


def _export(
    format: str,  # noqa: A002
    model: Any, path: Path, network: Any, tile: Any, contract: Any, metadata: Any,
    authors: Any, license: Any, name: Any, description: Any,  # noqa: A002
) -> Path:  # fmt: skip
    if format == "bioimageio":
        from ._bioimageio import write_package

        write_package(
            model, path, network, tile, contract, metadata,
            authors=authors, license=license, name=name, description=description,
        )  # fmt: skip
        return path
    if format == "onnx":
        from ._onnx import onnx_bytes

        data = onnx_bytes(network, tile, contract, metadata)
    else:
        from ._torchscript import torchscript_bytes

        data = torchscript_bytes(network, tile, metadata)
    write_atomically(path, data)
    return path
