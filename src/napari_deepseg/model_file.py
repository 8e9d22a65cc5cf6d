"""One-file model format: safetensors weights with JSON metadata; nothing is ever unpickled.

The header's metadata holds ``format`` (always ``napari-deepseg``), ``format_version``, the
JSON description of the model and a SHA-256 of the weights, so a foreign, truncated or
tampered file is refused with a message that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config import TrainingConfig
from .data.normalisation import Normalisation

if TYPE_CHECKING:
    from .segmentation_model import SegmentationModel

FORMAT_NAME = "napari-deepseg"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and says why."""


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(model: SegmentationModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically (an existing file is replaced only on success)."""
    from safetensors.torch import save_file

    from . import __version__

    path = Path(path)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.module.state_dict().items()}
    description = {
        "architecture": model.architecture,
        "encoder": model.encoder,
        "num_classes": model.num_classes,
        "class_names": list(model.class_names),
        "in_channels": model.in_channels,
        "normalisation": model.normalisation.to_dict(),
        "config": model.config.to_dict(),
        "history": model.history,
        "napari_deepseg_version": __version__,
        "torch_version": torch.__version__,
    }
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "model": json.dumps(description),
        "weights_sha256": weights_digest(state),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The model description stored in ``path`` (no weights are read), validated."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise ModelFileError(
            f"{str(path)!r} is not a napari-deepseg model file (unreadable header: {err}); it may be "
            "truncated or a different kind of file") from None
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{str(path)!r} is a safetensors file but not a napari-deepseg model")
    try:
        version = int(metadata.get("format_version", ""))
        description = json.loads(metadata["model"])
    except (ValueError, KeyError) as err:
        raise ModelFileError(f"{str(path)!r} has damaged metadata ({err})") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by a newer napari-deepseg (format {version}); please upgrade")
    description["weights_sha256"] = metadata.get("weights_sha256")
    return description


def load_model(path: str | Path, *, device: str = "cpu") -> SegmentationModel:
    """Rebuild the network through the registry and load its weights; refuses anything suspicious."""
    from safetensors.torch import load_file

    from ._device import resolve_device
    from .models import build_model
    from .segmentation_model import SegmentationModel

    path = Path(path)
    description = read_metadata(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:
        raise ModelFileError(f"{str(path)!r} is truncated or corrupt: {err}") from None
    if weights_digest(state) != description["weights_sha256"]:
        raise ModelFileError(f"{str(path)!r} has been modified or damaged: its weights do not match "
                             "their checksum")
    try:
        normalisation = Normalisation.from_dict(description["normalisation"])
        module = build_model(description["architecture"], num_classes=int(description["num_classes"]),
                             in_channels=int(description["in_channels"]), encoder=description["encoder"],
                             pretrained=False)
        module.load_state_dict(state, strict=True)
        # Files written before these options existed trained with dataset bounds and no averaging.
        config = TrainingConfig.from_dict({"normalisation": "dataset", "ema_decay": 0.0,
                                           **description["config"]})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{str(path)!r} does not describe a usable model: {err}") from None
    module.to(resolve_device(device)).eval()
    return SegmentationModel(
        module,
        architecture=description["architecture"],
        encoder=description["encoder"],
        num_classes=int(description["num_classes"]),
        normalisation=normalisation,
        class_names=description.get("class_names"),
        config=config,
        history=description.get("history") or [],
    )
