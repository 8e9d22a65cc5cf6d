"""Downloading torchvision's ImageNet weights into the torch hub cache, only when asked to.

Training never calls this: ``pretrained=True`` uses what is already in the cache. The file is
written under a temporary name in the cache folder and renamed into place only once its SHA-256
matches the hash prefix in torchvision's file name, so an interrupted or corrupt download never
leaves a file that looks like weights.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ._pretrained import pretrained_weights_status

# A base address replacing torchvision's (``https://download.pytorch.org/models``): the file name
# is appended. For a mirror, or a local server in tests.
BASE_URL_ENV = "NAPARI_DEEPSEG_WEIGHTS_URL"
# As torch.hub: the hex digits between the last "-" and the suffix are a SHA-256 prefix.
HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")
CHUNK = 1 << 16
TIMEOUT_S = 30.0

# Called with (bytes done, total bytes or None when the server does not say).
Progress = Callable[[int, "int | None"], None]


class WeightsDownloadError(OSError):
    """A download that did not produce the weights file: unreachable server, HTTP error, an
    interrupted transfer or a checksum mismatch. Nothing is left in the cache."""


def download_pretrained(
    encoder: str,
    progress: Progress | None = None,
    *,
    url: str | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch torchvision's ImageNet weights of ``encoder`` into the torch hub cache.

    Nothing is downloaded when the cache already holds a file for it: that file is returned.

    Parameters
    ----------
    encoder
        One of :data:`~napari_deepseg.models.encoders.ENCODERS`.
    progress
        Called from the downloading thread with (bytes done, total bytes or ``None``); an
        ``InterruptedError`` it raises cancels the download (nothing is kept) and propagates.
    url
        Address to fetch instead of torchvision's (default: the environment variable
        ``NAPARI_DEEPSEG_WEIGHTS_URL`` as a base address + the file name, else torchvision's).
        The hash is always checked against torchvision's file name.
    timeout
        Seconds without an answer from the server before giving up.

    Returns
    -------
    Path
        The weights file in the cache (``torch.hub.get_dir()/checkpoints/<file>``).

    Raises
    ------
    ValueError
        For an unknown encoder.
    WeightsDownloadError
        (an ``OSError``) when the file could not be fetched or its checksum is wrong; the message
        says how to put the file in place by hand.
    """
    status = pretrained_weights_status(encoder)
    if status.found is not None:
        return status.found
    target = status.expected_path
    source = url or source_url(status.url)
    match = HASH_PREFIX.search(target.name)
    if match is None:  # torchvision's names all carry one; a name without would skip the check
        raise ValueError(f"{target.name} carries no hash prefix to check the download against")
    by_hand = f"copy the file {target.name} (from {status.url}) into {target.parent} by hand"
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _fetch(source, out, progress, timeout, by_hand)
        if not digest.startswith(match.group(1)):
            raise WeightsDownloadError(
                f"the file from {source} is damaged: its SHA-256 {digest[:12]}... does not start with "
                f"{match.group(1)} (the hash in its name); try again, or {by_hand}"
            )
        os.replace(temp, target)  # atomic within one folder: the file appears whole or not at all
    finally:
        temp.unlink(missing_ok=True)  # also on Ctrl+C
    return target


def source_url(torchvision_url: str) -> str:
    """torchvision's address, or the same file name under ``NAPARI_DEEPSEG_WEIGHTS_URL``."""
    base = os.environ.get(BASE_URL_ENV, "").strip()
    if not base:
        return torchvision_url
    return f"{base.rstrip('/')}/{Path(urllib.parse.urlsplit(torchvision_url).path).name}"


def _fetch(source: str, out: BinaryIO, progress: Progress | None, timeout: float, by_hand: str) -> str:
    """Stream ``source`` into ``out``; the hex SHA-256 of what was read."""
    host = urllib.parse.urlsplit(source).hostname or source
    sha = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(source, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if progress is not None:
                progress(0, total)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except InterruptedError:  # raised by ``progress`` to cancel
        raise
    except urllib.error.HTTPError as error:
        raise WeightsDownloadError(
            f"{host} answered {error.code} {error.reason} for {source}; {by_hand}"
        ) from error
    except urllib.error.URLError as error:
        raise WeightsDownloadError(f"could not reach {host}: {error.reason}; {by_hand}") from error
    except (OSError, http.client.HTTPException) as error:  # reset, timeout mid-body, IncompleteRead
        raise WeightsDownloadError(
            f"the download from {host} stopped after {done} bytes ({error!r}); try again, or {by_hand}"
        ) from error
    if total is not None and done != total:
        raise WeightsDownloadError(
            f"the download from {host} broke off after {done} of {total} bytes; try again, or {by_hand}"
        )
    return sha.hexdigest()
