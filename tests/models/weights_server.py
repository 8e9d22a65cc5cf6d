"""A weights server on 127.0.0.1 for the download tests, and an encoder whose torchvision file is a
small state dict the test makes (named with its own SHA-256 prefix, as torchvision names its files).

Import the fixtures into a test module: ``from ..models.weights_server import fake_encoder, weights_server``.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from napari_deepseg.models import _pretrained

ENCODER = "resnet18"


@dataclass
class WeightsServer:
    """Serves ``files`` (name -> bytes); ``broken`` names are answered with a Content-Length 1000
    bytes longer than the half body sent before the connection is closed."""

    port: int
    files: dict[str, bytes] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    # When set: half of each body is sent, then the rest only once this event is set (a slow link).
    gate: threading.Event | None = None

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/models/{name}"


@dataclass
class FakeEncoder:
    """``resnet18`` with a test-made weights file: its name, contents, and where the cache keeps it."""

    name: str
    filename: str
    content: bytes
    cache: Path  # the checkpoints folder of the monkeypatched hub dir

    @property
    def cached(self) -> Path:
        return self.cache / self.filename


def _handler(server: WeightsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            server.requests.append(name)
            body = server.files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            broken = name in server.broken
            self.send_header("Content-Length", str(len(body) + 1000 if broken else len(body)))
            self.end_headers()
            if server.gate is not None and not broken:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                server.gate.wait(timeout=120)
                body = body[len(body) // 2 :]
            self.wfile.write(body[: len(body) // 2] if broken else body)
            if broken:
                self.wfile.flush()
                self.close_connection = True

        def log_message(self, *args: object) -> None:  # quiet
            pass

    return Handler


@pytest.fixture
def weights_server():
    state = WeightsServer(port=0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def fake_encoder(tmp_path, monkeypatch) -> FakeEncoder:
    """``resnet18``'s weights file replaced by a small state dict, and the hub cache in tmp_path."""
    buffer = io.BytesIO()
    # 256 KiB of padding: more than one read of the downloader (64 KiB), so a download can be caught
    # half-way through (the gate)
    torch.save({"conv1.weight": torch.arange(6.0).reshape(1, 1, 2, 3), "pad": torch.zeros(65536)}, buffer)
    content = buffer.getvalue()
    filename = f"{ENCODER}-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    weights = SimpleNamespace(url=f"https://download.pytorch.org/models/{filename}")
    monkeypatch.setitem(_pretrained.IMAGENET_WEIGHTS, ENCODER, (weights,))
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv("NAPARI_DEEPSEG_WEIGHTS_URL", raising=False)
    return FakeEncoder(ENCODER, filename, content, hub / "checkpoints")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
