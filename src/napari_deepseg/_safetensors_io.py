"""The safetensors container, read and written defensively (the model format is in ``model_file``).

Reading checks every size against the file before anything is read: the file type (a FIFO or a
device never blocks the reader), the header length against the file size and a cap, the JSON
against a cap on its items (memory) and its nesting (recursion), the tensor table against the
bytes that follow. safetensors' own loader is not used, so nothing it allocates escapes these
bounds. Writing goes to a temporary file beside the target, renamed over it only on success.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

# The header is mostly the training history (~250 bytes an iteration): 16 MiB holds ~60,000.
MAX_HEADER_BYTES = 16 * 2**20
# json.loads takes up to ~150 bytes per item; every item but the first in a container follows a
# comma, so commas + brackets bound the items, hence the memory, before anything is parsed.
MAX_JSON_ITEMS = 600_000
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CHUNK = 8 * 2**20
# One entry of the tensor table: dtype, shape, first and last byte after the header.
Entry = tuple[torch.dtype, tuple[int, ...], int, int]


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and says why."""


def file_error(path: Path, problem: str) -> ModelFileError:
    return ModelFileError(f"{str(path)!r} {problem}")


@contextmanager
def open_regular(path: Path) -> Iterator[tuple[io.FileIO, int]]:
    """The open file and its size; refuses anything but a regular file without blocking on it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {str(path)!r} does not exist") from None
    except OSError as err:
        raise file_error(path, f"cannot be read: {err.strerror or err}") from None
    _check_regular(path, info.st_mode)
    try:  # O_NONBLOCK: were the path swapped for a FIFO after the stat, open would not hang
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise file_error(path, f"cannot be read: {err.strerror or err}") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        info = os.fstat(fd)
        _check_regular(path, info.st_mode)
        yield f, info.st_size


def _check_regular(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise file_error(path, "is a folder, not a model file")
    if not stat.S_ISREG(mode):
        raise file_error(path, "is not a regular file (a pipe, socket or device?), so it is no model file")


def read_header(f: io.FileIO, path: Path, size: int) -> tuple[dict[str, str], dict[str, Entry]]:
    """The metadata and the tensor table of the safetensors file ``f``; the weights are not read."""
    not_ours = "is not a napari-deepseg model file"
    if size == 0:
        raise file_error(path, f"is empty: {not_ours} (was the save interrupted?)")
    prefix = f.read(8)
    if len(prefix) < 8:
        raise file_error(path, f"is too short ({size} bytes) to be a model file: truncated?")
    length = int.from_bytes(prefix, "little")
    if length > size - 8 and (prefix.startswith(b"PK\x03\x04") or prefix[0] == 0x80 and 2 <= prefix[1] <= 5):
        kind = "a PyTorch .pt/.pth file (a ZIP archive)" if prefix[0] != 0x80 else "a Python pickle"
        raise file_error(
            path,
            f"looks like {kind}, not a napari-deepseg model file: such files are "
            "never loaded, as unpickling them can run code",
        )
    if length > size - 8:
        raise file_error(
            path, f"{not_ours} or is truncated: its header claims {length:,} bytes but the file has {size:,}"
        )
    if length > MAX_HEADER_BYTES:
        raise file_error(path, f"{header_problem(length, 0)}: {not_ours}")
    raw = bytearray(length)
    if _read_into(f, raw) != length:
        raise file_error(path, "is truncated: it ended inside its header")
    problem = header_problem(length, json_items(raw))
    if problem:
        raise file_error(path, f"{problem}: {not_ours}")
    header = parse_json(path, raw, f"{not_ours} or is damaged: its header")
    if not isinstance(header, dict):
        raise file_error(path, f"{not_ours}: its header is no JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise file_error(path, f"{not_ours}: its metadata is not a table of texts")
    data_size = size - 8 - length
    table = {key: _table_entry(path, key, entry) for key, entry in header.items()}
    end = 0
    for _, _, begin, stop in sorted(table.values(), key=lambda e: e[2]):
        if begin != end:
            raise file_error(path, "is damaged: its tensors overlap or leave gaps")
        end = stop
    if end > data_size:
        raise file_error(
            path, f"is truncated: it holds {data_size:,} bytes of weights, its header describes {end:,}"
        )
    if end != data_size:
        raise file_error(path, f"is damaged: {data_size - end:,} bytes follow its weights")
    return metadata, table


def json_items(raw: bytes | bytearray) -> int:
    return raw.count(b",") + raw.count(b"{") + raw.count(b"[")


def header_problem(length: int, items: int) -> str | None:
    """Why a header of ``length`` bytes and ``items`` JSON items is refused; ``None`` if it is not."""
    if length > MAX_HEADER_BYTES:
        return f"has a {length:,}-byte header; model files have at most {MAX_HEADER_BYTES:,}"
    if items > MAX_JSON_ITEMS:
        return (
            f"has {items:,} JSON items in its header, more than the {MAX_JSON_ITEMS:,} a model file may have"
        )
    return None


def read_tensors(f: io.FileIO, path: Path, table: dict[str, Entry]) -> dict[str, torch.Tensor]:
    """The weights that follow the header just read by :func:`read_header`, in one buffer."""
    data = bytearray(max((entry[3] for entry in table.values()), default=0))
    if _read_into(f, data) != len(data):
        raise file_error(path, "is truncated: it ended while the weights were read")
    return {
        key: torch.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=begin).reshape(shape)
        if math.prod(shape)
        else torch.empty(shape, dtype=dtype)
        for key, (dtype, shape, begin, _) in table.items()
    }


def _read_into(f: io.FileIO, buffer: bytearray) -> int:
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        count = f.readinto(view[done:])
        if not count:
            break
        done += count
    return done


def _table_entry(path: Path, key: str, entry: Any) -> Entry:
    try:
        dtype = DTYPES[entry["dtype"]]
        shape = tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        numbers = (*shape, begin, end)
        if not all(type(n) is int and n >= 0 for n in numbers):
            raise ValueError("negative or non-integer sizes")
        itemsize = dtype.itemsize
        if begin > end or begin % itemsize:
            raise ValueError("bad offsets")
        if math.prod(shape) * itemsize != end - begin:
            raise ValueError("shape and offsets disagree")
    except (KeyError, TypeError, ValueError) as err:
        raise file_error(path, f"is damaged: tensor {key!r} is badly described ({err})") from None
    return dtype, shape, begin, end


def parse_json(path: Path, text: bytes | bytearray | str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise file_error(path, f"{what} is nested too deeply") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise file_error(path, f"{what} is not valid JSON ({err})") from None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it to ``path``; on any
    failure the temporary file is removed and ``path`` is as it was."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open, not mkstemp: the file gets the usual permissions (0666 less the umask), not 0600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)  # the bytes are on disk before the rename makes them the model file
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view[:_CHUNK])
        if written <= 0:
            raise OSError(errno.EIO, "the disk accepted no more bytes")
        view = view[written:]
