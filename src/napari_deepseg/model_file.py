"""One-file model format: safetensors weights with JSON metadata; nothing is ever unpickled.

The header's metadata holds ``format`` (always ``napari-deepseg``), ``format_version``, the
JSON description of the model and SHA-256 digests of that description and of the weights, so a
foreign, truncated or tampered file is refused with a message that names it.

Reading goes through ``_safetensors_io``, which bounds every size before reading it; the tensor
table is then checked against the architecture built on the ``meta`` device (which allocates
nothing) before the weights are read. Saving is atomic: a failed save leaves the file as it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._safetensors_io import (
    ModelFileError,
    file_error,
    header_problem,
    json_items,
    open_regular,
    parse_json,
    read_header,
    read_tensors,
    write_atomically,
)
from .config import TrainingConfig
from .data.normalisation import Normalisation

if TYPE_CHECKING:
    from .segmentation_model import SegmentationModel

FORMAT_NAME = "napari-deepseg"
# Version 2 files record network options that version-1 readers would ignore and so rebuild
# another network (a U-Net with nearest-neighbour up-sampling as a bilinear one): those readers
# must refuse them. A file whose options are the legacy ones is still written as version 1.
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ModelFileError",
    "ModelSaveError",
    "load_model",
    "read_metadata",
    "save_model",
    "weights_digest",
]


class ModelSaveError(OSError):
    """Saving failed; the file at the path is as it was and the model is still in memory."""


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)  # the buffer itself, no copy
    return digest.hexdigest()


# Records kept in a file: ~11 JSON items and ~250 bytes each, well inside the loader's caps.
MAX_STORED_RECORDS = 20_000


def thinned_history(history: list[dict], limit: int = MAX_STORED_RECORDS) -> list[dict]:
    """At most ``limit`` records of a long run for the file: every record with validation scores,
    the first and the last, and evenly spaced ones between (the model in memory keeps them all)."""
    if len(history) <= limit:
        return history
    keep = {0, len(history) - 1} | {i for i, r in enumerate(history) if r.get("validation")}
    room = max(limit - len(keep), 0)
    keep |= {round(i * (len(history) - 1) / max(room - 1, 1)) for i in range(room)}
    kept = sorted(keep)
    if len(kept) > limit:  # more validation records than room: the earliest ones and the last
        kept = kept[: limit - 1] + [len(history) - 1]
    return [history[i] for i in kept]


def save_model(model: SegmentationModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically: the previous file there is replaced only on success.

    Raises :class:`ModelSaveError` (an ``OSError``) naming the path when the disk is full, the
    folder is not writable, ...; no temporary file is left behind.
    """
    from safetensors.torch import save

    from . import __version__

    path = Path(path)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.module.state_dict().items()}
    options = network_options(model.module)
    legacy = options == _legacy_options(model.architecture)
    description = json.dumps(
        {
            "architecture": model.architecture,
            "encoder": model.encoder,
            "network_options": options,
            "num_classes": model.num_classes,
            "class_names": list(model.class_names),
            "in_channels": model.in_channels,
            "normalisation": model.normalisation.to_dict(),
            "config": model.config.to_dict(),
            "history": thinned_history(model.history),
            "napari_deepseg_version": __version__,
            "torch_version": torch.__version__,
        }
    )
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(1 if legacy else FORMAT_VERSION),
        "model": description,
        "model_sha256": hashlib.sha256(description.encode()).hexdigest(),
        "weights_sha256": weights_digest(state),
    }
    data = save(state, metadata=metadata)
    del state
    length = int.from_bytes(data[:8], "little")
    problem = header_problem(length, json_items(data[8 : 8 + length]))
    if problem:  # a file that loading would refuse is not written
        raise ModelSaveError(
            f"could not save the model to {str(path)!r}: the file {problem} (the training "
            f"history holds {len(model.history):,} records). The file there (if any) was "
            "left as it was and the model is still in memory"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
    except OSError as err:
        failure = ModelSaveError(
            f"could not save the model to {str(path)!r}: {err.strerror or err}. The file there (if any) "
            "was left as it was and the model is still in memory: free some space or choose another "
            "folder, then save again"
        )
        failure.errno = err.errno
        raise failure from err
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The model description stored in ``path`` (no weights are read), validated."""
    path = Path(path)
    with open_regular(path) as (f, size):
        metadata, _ = read_header(f, path, size)
    return _description(path, metadata)


def load_model(path: str | Path, *, device: str = "cpu") -> SegmentationModel:
    """Rebuild the network through the registry and load its weights; refuses anything suspicious."""
    from ._device import resolve_device
    from .segmentation_model import SegmentationModel

    path = Path(path)
    with open_regular(path) as (f, size):
        metadata, table = read_header(f, path, size)
        description = _description(path, metadata)
        module = _build_on_meta(path, description)
        _check_table(path, table, module.state_dict())
        state = read_tensors(f, path, table)
    expected = description["weights_sha256"]
    if expected is not None and weights_digest(state) != expected:
        raise file_error(path, "has been modified or damaged: its weights do not match their checksum")
    bad = [key for key, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise file_error(
            path,
            f"holds NaN or infinite weights ({', '.join(bad[:3])}); the training that "
            "wrote it diverged or the file is damaged",
        )
    try:
        persistent = set(state)
        if all(name in persistent for name, _ in module.named_buffers()):
            module = module.to_empty(device="cpu")  # every value is overwritten just below
        else:  # a buffer the file does not hold must keep the value the builder gives it
            module = _build(description)
        module.load_state_dict(state, strict=True)
        # Files written before these options existed trained with dataset bounds, no averaging and
        # no CRF loss.
        config = TrainingConfig.from_dict(
            {
                "normalisation": "dataset",
                "ema_decay": 0.0,
                "regularisation_weight": 0.0,
                **description["config"],
            }
        )
        normalisation = Normalisation.from_dict(description["normalisation"])
        model = SegmentationModel(
            module,
            architecture=description["architecture"],
            encoder=description["encoder"],
            num_classes=description["num_classes"],
            normalisation=normalisation,
            class_names=description["class_names"],
            config=config,
            history=description["history"],
        )
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise file_error(path, f"does not describe a usable model: {err}") from None
    if model.in_channels != description["in_channels"]:
        raise file_error(
            path,
            "does not describe a usable model: its normalisation has "
            f"{model.in_channels} channels, its network {description['in_channels']}",
        )
    module.to(resolve_device(device)).eval()
    return model


_FIELDS = {
    "architecture": str,
    "encoder": str,
    "num_classes": int,
    "in_channels": int,
    "class_names": list,
    "normalisation": dict,
    "config": dict,
    "history": list,
}


def _description(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    if metadata.get("format") != FORMAT_NAME:
        raise file_error(path, "is a safetensors file but not a napari-deepseg model")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) not in SUPPORTED_VERSIONS:
        newer = version.isdigit() and int(version) > FORMAT_VERSION
        hint = "; please upgrade napari-deepseg" if newer else ""
        raise file_error(
            path,
            f"has model format version {version[:20]!r}; this napari-deepseg reads "
            f"versions {SUPPORTED_VERSIONS[0]} to {FORMAT_VERSION}{hint}",
        )
    text = metadata.get("model", "")
    expected = metadata.get("model_sha256")  # absent from files written before it was added
    if expected is not None and hashlib.sha256(text.encode()).hexdigest() != expected:
        raise file_error(path, "has been modified or damaged: its description does not match its checksum")
    description = parse_json(path, text, "has damaged metadata: the model description")
    if not isinstance(description, dict):
        raise file_error(path, "has damaged metadata: the model description is no JSON object")
    description.setdefault("class_names", None)
    description["history"] = description.get("history") or []
    for name, kind in _FIELDS.items():
        value = description.get(name)
        if not (isinstance(value, kind) and not isinstance(value, bool)) and not (
            name == "class_names" and value is None
        ):
            raise file_error(
                path, f"has damaged metadata: {name!r} is {type(value).__name__}, not {kind.__name__}"
            )
    if not isinstance(description.setdefault("network_options", None), dict | None):
        raise file_error(path, "has damaged metadata: 'network_options' is no JSON object")
    if not all(isinstance(r, dict) and type(r.get("iteration")) is int for r in description["history"]):
        raise file_error(path, "has damaged metadata: a training-history record has no iteration number")
    description["weights_sha256"] = metadata.get("weights_sha256")
    return description


def network_options(module: torch.nn.Module) -> dict[str, Any]:
    """The architecture's own arguments of ``module`` (``{}`` for a network that has none)."""
    return dict(getattr(module, "options", {}))


def _legacy_options(architecture: str) -> dict[str, Any]:
    """The options of files written before the architectures had any."""
    from .models import architecture_spec

    return dict(architecture_spec(architecture).network.legacy_options)


def _build(description: dict[str, Any]) -> torch.nn.Module:
    from .models import build_model

    options = description["network_options"]
    if options is None:  # written before the architectures had options
        options = _legacy_options(description["architecture"])
    return build_model(
        description["architecture"],
        num_classes=description["num_classes"],
        in_channels=description["in_channels"],
        encoder=description["encoder"],
        pretrained=False,
        options=options,
    )


def _build_on_meta(path: Path, description: dict[str, Any]) -> torch.nn.Module:
    try:
        with torch.device("meta"):  # shapes and dtypes only: a claimed 10**9 classes costs nothing
            return _build(description)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise file_error(path, f"does not describe a usable model: {err}") from None


def _check_table(path: Path, table: dict[str, Any], expected: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(table))
    unexpected = sorted(set(table) - set(expected))
    wrong = [
        f"{k} is {table[k][0]} {list(table[k][1])}, expected {v.dtype} {list(v.shape)}"
        for k, v in expected.items()
        if k in table and (table[k][0], table[k][1]) != (v.dtype, v.shape)
    ]
    problems = (
        ([f"missing {', '.join(missing[:3])}"] if missing else [])
        + ([f"unexpected {', '.join(unexpected[:3])}"] if unexpected else [])
        + wrong[:3]
    )
    if problems:
        raise file_error(
            path,
            f"does not fit its architecture: {'; '.join(problems)}"
            f"{' ...' if len(missing) + len(unexpected) + len(wrong) > 3 else ''}",
        )
