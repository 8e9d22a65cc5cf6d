"""Damaged and hostile model files: each is refused with a message that names it, in bounded time
and memory, and nothing in it ever runs; a failed save leaves the previous file as it was."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import stat
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_deepseg import SegmentationModel, _safetensors_io
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.model_file import MAX_STORED_RECORDS, ModelFileError, ModelSaveError
from napari_deepseg.models import build_model

SECONDS = 2.0
EXTRA_BYTES = 100 * 2**20


def tiny_model() -> SegmentationModel:
    module = build_model("unet", num_classes=2, in_channels=1, encoder="resnet18", pretrained=False)
    return SegmentationModel(
        module,
        architecture="unet",
        encoder="resnet18",
        num_classes=2,
        normalisation=Normalisation(low=(0.0,), high=(1.0,)),
        history=[{"iteration": 1, "loss": 0.5}],
    )


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    return tiny_model()


@pytest.fixture(scope="module")
def good(model, tmp_path_factory) -> bytes:
    return model.save(tmp_path_factory.mktemp("good") / "good.safetensors").read_bytes()


def split(data: bytes) -> tuple[dict, bytes]:
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def assemble(header: dict | bytes, weights: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + weights


def with_metadata(data: bytes, **changes: str) -> bytes:
    """``data`` with metadata entries changed; a changed description gets a matching checksum, as
    anyone crafting a file can compute one."""
    header, weights = split(data)
    header["__metadata__"].update(changes)
    if "model" in changes:
        header["__metadata__"]["model_sha256"] = hashlib.sha256(changes["model"].encode()).hexdigest()
    return assemble(header, weights)


def with_description(data: bytes, **changes) -> bytes:
    description = json.loads(split(data)[0]["__metadata__"]["model"])
    return with_metadata(data, model=json.dumps({**description, **changes}))


def refused(path: Path, expected: type[Exception] = ModelFileError) -> str:
    """Load ``path``, expecting a refusal in bounded time and memory; the message."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(expected) as caught:
            SegmentationModel.load(path)
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    message = str(caught.value)
    assert path.name in message
    assert elapsed < SECONDS, f"{elapsed:.2f} s to refuse {path.name}"
    assert peak < EXTRA_BYTES, f"{peak / 2**20:.0f} MB to refuse {path.name}"
    return message


def _payload_pickle(marker: Path) -> object:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return {"state_dict": Payload()}


def _bytes_case(make: Callable[[bytes], bytes], expected: str) -> tuple[Callable, str]:
    def write(good: bytes, path: Path) -> None:
        path.write_bytes(make(good))

    return write, expected


def _sparse_gigabyte_header(good: bytes, path: Path) -> None:
    with open(path, "wb") as f:  # the header length is true to the (sparse, 1 GiB) file
        f.write((2**30).to_bytes(8, "little") + b"{")
        f.truncate(2**30 + 8)


def _torch_zip(good: bytes, path: Path) -> None:
    torch.save(_payload_pickle(path.with_name("marker")), path)


def _torch_legacy(good: bytes, path: Path) -> None:
    torch.save(_payload_pickle(path.with_name("marker")), path, _use_new_zipfile_serialization=False)


def _plain_pickle(good: bytes, path: Path) -> None:
    path.write_bytes(pickle.dumps(_payload_pickle(path.with_name("marker"))))


def _foreign(good: bytes, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.randn(64, 3, 7, 7), "bias": torch.randn(64)}, str(path))


def _foreign_with_our_metadata(good: bytes, path: Path) -> None:
    from safetensors.torch import save

    header, _ = split(good)
    path.write_bytes(save({"weight": torch.randn(64, 3, 7, 7)}, metadata=header["__metadata__"]))


def _non_finite(value: float) -> Callable[[bytes, Path], None]:
    def write(good: bytes, path: Path) -> None:
        damaged = tiny_model()
        with torch.no_grad():
            next(damaged.module.parameters()).view(-1)[5] = value
        damaged.save(path)

    return write


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _edit_keeping_checksum(good: bytes) -> bytes:
    header, weights = split(good)
    header["__metadata__"]["model"] = header["__metadata__"]["model"].replace(
        '"num_classes": 2', '"num_classes": 3'
    )
    return assemble(header, weights)


def _edit_header(good: bytes, key: str, value: object) -> bytes:
    header, weights = split(good)
    header[key] = value
    return assemble(header, weights)


def _edit_first_tensor(good: bytes, **changes: object) -> bytes:
    header, weights = split(good)
    first = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    header[first] = {**header[first], **changes}
    return assemble(header, weights)


CASES: dict[str, tuple[Callable[[bytes, Path], None], str]] = {
    "empty file": _bytes_case(lambda g: b"", "is empty"),
    "5 bytes": _bytes_case(lambda g: g[:5], "too short"),
    "header claims 1 TiB": _bytes_case(
        lambda g: (2**40).to_bytes(8, "little") + g[8:4096], "header claims 1,099,511,627,776 bytes"
    ),
    "header of 1 GiB (sparse file)": (_sparse_gigabyte_header, "model files have at most"),
    "deeply nested header": _bytes_case(
        lambda g: assemble(f'{{"a": {_deep(100_000)}}}'.encode(), b""), "nested too deeply"
    ),
    "deeply nested description": _bytes_case(
        lambda g: with_metadata(g, model=_deep(100_000)), "nested too deeply"
    ),
    "4 million JSON items": _bytes_case(
        lambda g: assemble(f'{{"__metadata__": {{"a": "{"," * 4_000_000}"}}}}'.encode(), b""), "JSON items"
    ),
    "description of 250,000 empty objects": _bytes_case(
        lambda g: with_metadata(g, model="[" + "{}," * 250_000 + "{}]"), "no JSON object"
    ),
    "format version 3": _bytes_case(lambda g: with_metadata(g, format_version="3"), "please upgrade"),
    "format version 0": _bytes_case(lambda g: with_metadata(g, format_version="0"), "reads versions 1 to 2"),
    "format version 'one'": _bytes_case(
        lambda g: with_metadata(g, format_version="one"), "reads versions 1 to 2"
    ),
    "foreign safetensors file": (_foreign, "not a napari-deepseg model"),
    "foreign weights, our metadata": (_foreign_with_our_metadata, "does not fit its architecture"),
    "torch.save pickle with payload": (_torch_zip, "looks like a PyTorch .pt/.pth file"),
    "legacy torch.save pickle with payload": (_torch_legacy, "looks like a Python pickle"),
    "plain pickle with payload": (_plain_pickle, "looks like a Python pickle"),
    "NaN weight": (_non_finite(float("nan")), "NaN or infinite"),
    "infinite weight": (_non_finite(float("inf")), "NaN or infinite"),
    "description edited, checksum kept": _bytes_case(
        _edit_keeping_checksum, "description does not match its checksum"
    ),
    "a billion classes": _bytes_case(
        lambda g: with_description(g, num_classes=10**9), "does not fit its architecture"
    ),
    "unknown architecture": _bytes_case(
        lambda g: with_description(g, architecture="evil"), "unknown architecture"
    ),
    "history without iterations": _bytes_case(
        lambda g: with_description(g, history=[{"loss": 1}]), "training-history record"
    ),
    "metadata value not text": _bytes_case(
        lambda g: _edit_header(g, "__metadata__", {"format": 1}), "not a table of texts"
    ),
    "unknown dtype": _bytes_case(lambda g: _edit_first_tensor(g, dtype="F8_E4M3"), "badly described"),
    "shape and offsets disagree": _bytes_case(
        lambda g: _edit_first_tensor(g, shape=[1]), "shape and offsets disagree"
    ),
    "bytes after the weights": _bytes_case(lambda g: g + b"\0" * 64, "64 bytes follow its weights"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_file_is_refused_naming_it(case, good, tmp_path):
    write, expected = CASES[case]
    path = tmp_path / "hostile.safetensors"
    write(good, path)
    assert expected in refused(path)
    assert not (tmp_path / "marker").exists()  # the pickles' payload never ran


@pytest.mark.parametrize("percent", range(0, 100, 10))
def test_truncation_at_every_tenth_is_refused(percent, good, tmp_path):
    path = tmp_path / f"cut{percent}.safetensors"
    path.write_bytes(good[: len(good) * percent // 100])
    message = refused(path)
    assert any(word in message for word in ("empty", "truncated", "too short")), message


def test_bit_flips_in_the_weights_are_detected(good, tmp_path):
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(good)
    length = int.from_bytes(good[:8], "little")
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(8 + length, len(good), (8,), generator=generator).tolist()
    with open(path, "r+b") as f:
        for position in positions:
            f.seek(position)
            f.write(bytes([good[position] ^ (1 << position % 8)]))
            f.flush()
            assert "weights do not match their checksum" in refused(path)
            f.seek(position)
            f.write(good[position : position + 1])


def test_bit_flips_in_the_header_are_refused_or_harmless(model, good, tmp_path):
    """A flip the checks cannot see (a checksum's own name, say) must leave the model as saved."""
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(good)
    length = int.from_bytes(good[:8], "little")
    expected = {k: v.clone() for k, v in model.module.state_dict().items()}
    outcomes = {"refused": 0, "harmless": 0}
    with open(path, "r+b") as f:
        for position in range(0, 8 + length, max(1, (8 + length) // 150)):
            f.seek(position)
            f.write(bytes([good[position] ^ (1 << position % 8)]))
            f.flush()
            try:
                loaded = SegmentationModel.load(path)
            except ModelFileError as err:
                assert path.name in str(err)
                outcomes["refused"] += 1
            else:
                state = loaded.module.state_dict()
                assert state.keys() == expected.keys()
                assert all(torch.equal(state[k], expected[k]) for k in expected), position
                assert (loaded.num_classes, loaded.history) == (model.num_classes, model.history)
                outcomes["harmless"] += 1
            f.seek(position)
            f.write(good[position : position + 1])
    assert outcomes["refused"] >= 0.9 * sum(outcomes.values()), outcomes


def _without_checksums(good: bytes) -> bytes:
    header, weights = split(good)
    del header["__metadata__"]["weights_sha256"], header["__metadata__"]["model_sha256"]
    return assemble(header, weights)


def test_older_files_without_checksums_load_and_their_weights_must_be_finite(model, good, tmp_path):
    old = _without_checksums(good)
    path = tmp_path / "old.safetensors"
    path.write_bytes(old)
    loaded = SegmentationModel.load(path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.module.state_dict().values(), model.module.state_dict().values(), strict=True)
    )
    header, weights = split(old)
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    begin = len(old) - len(weights) + header[name]["data_offsets"][0]
    flipped = bytearray(old)
    flipped[begin + 1] ^= 0x10  # a mantissa bit: a different but finite weight, which may load
    path.write_bytes(bytes(flipped))
    state = SegmentationModel.load(path).module.state_dict()
    assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
    flipped[begin : begin + 4] = bytes.fromhex("0000c07f")  # a NaN where there was a weight
    path.write_bytes(bytes(flipped))
    assert f"NaN or infinite weights ({name}" in refused(path)


def test_a_folder_a_fifo_a_device_and_a_missing_path(tmp_path):
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    assert "is a folder" in refused(folder)
    assert "does not exist" in refused(tmp_path / "missing.safetensors", FileNotFoundError)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.safetensors"
        os.mkfifo(fifo)
        messages: list[str] = []
        # A reader that opened the FIFO would wait for a writer forever: run it where it may hang.
        thread = threading.Thread(target=lambda: messages.append(refused(fifo)), daemon=True)
        thread.start()
        thread.join(SECONDS)
        assert not thread.is_alive(), "loading a FIFO blocked"
        assert "not a regular file" in messages[0]
    if Path("/dev/zero").exists():
        assert "not a regular file" in refused(Path("/dev/zero"))


# ------------------------------------------------------------------------------------------- saving
def _fail_writing(error: BaseException) -> Callable[[int, bytes], None]:
    def write_some_then_fail(fd: int, data: bytes) -> None:
        os.write(fd, data[:4096])
        raise error

    return write_some_then_fail


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), PermissionError(errno.EACCES, "Permission denied")],
)
def test_a_failed_save_leaves_the_previous_file_and_no_temporary(error, model, good, tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(good)
    changed = tiny_model()
    monkeypatch.setattr(_safetensors_io, "_write_all", _fail_writing(error))
    with pytest.raises(ModelSaveError) as caught:
        changed.save(path)
    message = str(caught.value)
    assert str(path) in message and "still in memory" in message and error.strerror in message
    assert isinstance(caught.value, OSError) and caught.value.errno == error.errno
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    monkeypatch.undo()  # the model in memory can still be saved elsewhere
    assert SegmentationModel.load(changed.save(tmp_path / "elsewhere.safetensors")).history == changed.history


def test_saving_into_a_read_only_folder(model, good, tmp_path, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    path = folder / "model.safetensors"
    path.write_bytes(good)
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anywhere: refuse the temporary file as the folder would
            real_open = os.open

            def refusing_open(file, flags, *args, **kwargs):
                if str(file).endswith(".tmp"):
                    raise PermissionError(errno.EACCES, "Permission denied", str(file))
                return real_open(file, flags, *args, **kwargs)

            monkeypatch.setattr(os, "open", refusing_open)
        with pytest.raises(ModelSaveError, match="Permission denied") as caught:
            model.save(path)
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)
    assert str(path) in str(caught.value) and "still in memory" in str(caught.value)
    assert path.read_bytes() == good and [p.name for p in folder.iterdir()] == [path.name]


def test_an_interrupted_save_and_a_folder_in_the_way_leave_everything_as_it_was(
    model, good, tmp_path, monkeypatch
):
    path = tmp_path / "model.safetensors"
    path.write_bytes(good)
    monkeypatch.setattr(_safetensors_io, "_write_all", _fail_writing(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == [path.name]
    folder = tmp_path / "folder.safetensors"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(ModelSaveError, match="folder.safetensors"):
        model.save(folder)  # os.replace cannot put a file over a folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.safetensors", path.name]


def test_a_model_whose_file_loading_would_refuse_is_not_saved(good, tmp_path):
    long = tiny_model()
    # a long history is thinned (below); one absurd record is not
    long.history = [{"iteration": 1, "loss": 0.5, "painted_pixels": [10] * 700_000}]
    path = tmp_path / "model.safetensors"
    path.write_bytes(good)
    with pytest.raises(ModelSaveError, match="JSON items") as caught:
        long.save(path)
    assert "1 records" in str(caught.value) and "still in memory" in str(caught.value)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_long_history_is_thinned_in_the_file_and_kept_in_memory(tmp_path):
    long = tiny_model()
    long.history = [
        {
            "iteration": i,
            "loss": 1.0 / i,
            "painted_pixels": [10, 20],
            "validation": {"iou": [0.5, 0.6]} if i % 50 == 0 else None,
        }
        for i in range(1, 120_001)
    ]
    loaded = SegmentationModel.load(long.save(tmp_path / "long.safetensors"))
    assert len(long.history) == 120_000  # the model in memory keeps every record
    stored = [r["iteration"] for r in loaded.history]
    assert len(stored) <= MAX_STORED_RECORDS and stored == sorted(set(stored))
    assert stored[0] == 1 and stored[-1] == 120_000
    assert set(range(50, 120_001, 50)) <= set(stored)  # every validation record
    gaps = np.diff(stored)
    assert gaps.max() <= 2 * 120_000 / MAX_STORED_RECORDS + 1  # evenly spread, no long hole


def test_a_saved_file_has_the_usual_permissions(model, tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = model.save(tmp_path / "model.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
