"""bioimage.io model package (spec 0.5): three weight formats, test tensors, processing, docs, cover."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile
import torch

from ..data.normalisation import CENTRE, INPUT_LIMIT, SPREAD, Normalisation
from ..model_file import network_options
from ._contract import InputContract, ProbabilityNetwork, TestTile, check_outputs
from ._onnx import OPSET, onnx_bytes
from ._package_docs import papers, readme, write_cover
from ._torchscript import torchscript_bytes
from .architecture import build_network

if TYPE_CHECKING:
    from ..segmentation_model import SegmentationModel

DEFAULT_AUTHORS = ("napari-deepseg user",)
ARCHITECTURE = "napari_deepseg.export.architecture"
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_+\- ()]")


def write_package(
    model: SegmentationModel,
    path: Path,
    network: ProbabilityNetwork,
    tile: TestTile,
    contract: InputContract,
    metadata: dict[str, Any],
    *,
    authors: Sequence[str | Mapping[str, str]] | None = None,
    license: str = "BSD-3-Clause",  # noqa: A002 (the spec's own field name)
    name: str | None = None,
    description: str | None = None,
) -> None:
    """Write the zipped package to ``path``: assembled in a temporary folder beside it, then
    renamed to ``path`` only when every weight format matched the engine and the spec validated."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bio

    kwargs: dict[str, Any] = {
        "architecture": model.architecture,
        "encoder": model.encoder,
        "num_classes": model.num_classes,
        "in_channels": model.in_channels,
        "options": network_options(model.module),
    }
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    _check_state_dict(kwargs, state, tile)
    torchscript = torchscript_bytes(network, tile, metadata)
    onnx = onnx_bytes(network, tile, contract, metadata)
    name = name or default_name(model)
    description = description or (
        f"Semantic segmentation into {', '.join(model.class_names)}, trained with napari-deepseg "
        "from painted strokes."
    )
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as folder:
        files = Path(folder)
        torch.save(state, files / "weights.pt")
        (files / "weights_torchscript.pt").write_bytes(torchscript)
        (files / "weights.onnx").write_bytes(onnx)
        np.save(files / "test_input.npy", tile.raw)
        np.save(files / "test_output.npy", tile.probabilities)
        tifffile.imwrite(files / "sample_input.tif", tile.raw[0], photometric="minisblack")
        tifffile.imwrite(files / "sample_output.tif", tile.probabilities[0], photometric="minisblack")
        write_cover(files / "cover.png", tile.raw, tile.probabilities)
        (files / "README.md").write_text(readme(model, contract, name, description), encoding="utf-8")
        version = bio.Version(torch.__version__.split("+")[0])
        descr = bio.ModelDescr(
            name=name,
            description=description,
            authors=[_author(bio, a) for a in (authors or DEFAULT_AUTHORS)],
            cite=[
                bio.CiteEntry(text=text, doi=bio.Doi(doi))
                for text, doi in papers(model.architecture, model.encoder)
            ],
            license=bio.LicenseId(license),
            documentation=bio.FileDescr(source=files / "README.md"),
            covers=[bio.FileDescr(source=files / "cover.png")],
            tags=["napari-deepseg", "semantic-segmentation", "2d", model.architecture, model.encoder],
            inputs=[_input(bio, model, contract, files)],
            outputs=[_output(bio, model, files)],
            weights=bio.WeightsDescr(
                pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
                    source=files / "weights.pt",
                    architecture=bio.ArchitectureFromLibraryDescr(
                        callable=bio.Identifier("build_network"), import_from=ARCHITECTURE, kwargs=kwargs
                    ),
                    pytorch_version=version,
                ),
                torchscript=bio.TorchscriptWeightsDescr(
                    source=files / "weights_torchscript.pt",
                    pytorch_version=version,
                    parent="pytorch_state_dict",
                    comment="traced; input sizes as in the inputs' axes",
                ),
                onnx=bio.OnnxWeightsDescr(
                    source=files / "weights.onnx", opset_version=OPSET, parent="pytorch_state_dict"
                ),
            ),
        )
        staged = files / "package.zip"
        save_bioimageio_package(descr, output_path=staged)
        os.replace(staged, path)


def default_name(model: SegmentationModel) -> str:
    """A name such as "napari-deepseg unet (resnet34) background nucleus", in the spec's characters."""
    classes = " ".join(model.class_names)
    text = _NAME_CHARACTERS.sub("_", f"napari-deepseg {model.architecture} ({model.encoder}) {classes}")
    return text[:64].rstrip()


def _author(bio: Any, author: str | Mapping[str, str]) -> Any:
    return bio.Author(name=author) if isinstance(author, str) else bio.Author(**dict(author))


def _preprocessing(bio: Any, normalisation: Normalisation) -> list[Any]:
    """Our normalisation in the spec's terms: scale_range per sample and channel (or fixed bounds
    as scale_linear in dataset mode), the affine map to [-2, 2], the clip."""
    clip = bio.ClipDescr(kwargs=bio.ClipKwargs(min=-INPUT_LIMIT, max=INPUT_LIMIT))
    if normalisation.mode == "per_image":
        low_p, high_p = normalisation.percentiles
        scale_range = bio.ScaleRangeDescr(
            kwargs=bio.ScaleRangeKwargs(
                axes=[bio.AxisId("y"), bio.AxisId("x")], min_percentile=low_p, max_percentile=high_p
            )
        )
        standardise = bio.ScaleLinearDescr(
            kwargs=bio.ScaleLinearKwargs(gain=1 / SPREAD, offset=-CENTRE / SPREAD)
        )
        return [scale_range, standardise, clip]
    low, high = np.asarray(normalisation.low), np.asarray(normalisation.high)
    gain = 1 / (SPREAD * (high - low))
    offset = -low * gain - CENTRE / SPREAD
    if len(low) == 1:
        linear = bio.ScaleLinearKwargs(gain=float(gain[0]), offset=float(offset[0]))
    else:
        linear = bio.ScaleLinearAlongAxisKwargs(
            axis=bio.AxisId("channel"), gain=gain.tolist(), offset=offset.tolist()
        )
    return [bio.ScaleLinearDescr(kwargs=linear), clip]


def _input(bio: Any, model: SegmentationModel, contract: InputContract, files: Path) -> Any:
    size = bio.ParameterizedSize(min=contract.min_size, step=contract.size_divisor)
    return bio.InputTensorDescr(
        id=bio.TensorId(INPUT_ID),
        description="image before normalisation; the pre-processing normalises it",
        axes=[
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=[f"channel{i}" for i in range(model.in_channels)]),
            bio.SpaceInputAxis(id=bio.AxisId("y"), size=size),
            bio.SpaceInputAxis(id=bio.AxisId("x"), size=size),
        ],
        test_tensor=bio.FileDescr(source=files / "test_input.npy"),
        sample_tensor=bio.FileDescr(source=files / "sample_input.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=_preprocessing(bio, model.normalisation),
    )


def _output(bio: Any, model: SegmentationModel, files: Path) -> Any:
    def same_as_input(axis: str) -> Any:
        return bio.SizeReference(tensor_id=bio.TensorId(INPUT_ID), axis_id=bio.AxisId(axis))

    return bio.OutputTensorDescr(
        id=bio.TensorId(OUTPUT_ID),
        description="softmax probabilities; channel k-1 is class k",
        axes=[
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=list(model.class_names)),
            bio.SpaceOutputAxis(id=bio.AxisId("y"), size=same_as_input("y")),
            bio.SpaceOutputAxis(id=bio.AxisId("x"), size=same_as_input("x")),
        ],
        test_tensor=bio.FileDescr(source=files / "test_output.npy"),
        sample_tensor=bio.FileDescr(source=files / "sample_output.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )


def _check_state_dict(kwargs: dict[str, Any], state: dict[str, torch.Tensor], tile: TestTile) -> None:
    """The state dict loaded into the package's architecture callable reproduces the engine."""
    rebuilt = build_network(**kwargs)
    rebuilt.load_state_dict(state, strict=True)
    with torch.no_grad():
        outputs = rebuilt(torch.from_numpy(tile.network_input)).numpy()
    check_outputs("PyTorch state dict", outputs, tile)
