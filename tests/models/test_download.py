"""download_pretrained against a local server: the checked file lands in the hub cache, and a bad
checksum, a broken-off transfer or an unreachable server leaves nothing behind."""

import hashlib

import pytest
import torch

from napari_deepseg.models import WeightsDownloadError, download_pretrained, pretrained_weights_status
from napari_deepseg.models._pretrained import pretrained_state_dict

from .weights_server import closed_port, fake_encoder, weights_server  # noqa: F401 (fixtures)


def leftovers(encoder) -> list[str]:
    return sorted(p.name for p in encoder.cache.iterdir()) if encoder.cache.exists() else []


def test_a_good_file_lands_in_the_cache_and_is_used(fake_encoder, weights_server):  # noqa: F811
    weights_server.files[fake_encoder.filename] = fake_encoder.content
    assert not pretrained_weights_status(fake_encoder.name).available
    calls = []
    path = download_pretrained(
        fake_encoder.name,
        lambda done, total: calls.append((done, total)),
        url=weights_server.url(fake_encoder.filename),
    )
    assert path == fake_encoder.cached and path.read_bytes() == fake_encoder.content
    assert leftovers(fake_encoder) == [fake_encoder.filename]  # no temporary file
    assert pretrained_weights_status(fake_encoder.name).found == path
    state, found = pretrained_state_dict(fake_encoder.name, None)
    assert found == path and torch.equal(state["conv1.weight"], torch.arange(6.0).reshape(1, 1, 2, 3))
    size = len(fake_encoder.content)
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    # Already cached: returned without asking the server again.
    assert download_pretrained(fake_encoder.name, url=weights_server.url(fake_encoder.filename)) == path
    assert weights_server.requests == [fake_encoder.filename]


def test_the_base_address_comes_from_the_environment(fake_encoder, weights_server, monkeypatch):  # noqa: F811
    weights_server.files[fake_encoder.filename] = fake_encoder.content
    monkeypatch.setenv("NAPARI_DEEPSEG_WEIGHTS_URL", weights_server.url())
    assert download_pretrained(fake_encoder.name).read_bytes() == fake_encoder.content


def test_a_bad_checksum_is_an_error_and_leaves_no_file(fake_encoder, weights_server):  # noqa: F811
    weights_server.files[fake_encoder.filename] = fake_encoder.content + b"tampered"
    with pytest.raises(WeightsDownloadError, match="damaged: its SHA-256") as error:
        download_pretrained(fake_encoder.name, url=weights_server.url(fake_encoder.filename))
    actual = hashlib.sha256(fake_encoder.content + b"tampered").hexdigest()
    assert actual[:12] in str(error.value) and fake_encoder.filename in str(error.value)
    assert leftovers(fake_encoder) == []
    assert not pretrained_weights_status(fake_encoder.name).available


def test_a_transfer_that_breaks_off_leaves_no_partial_file(fake_encoder, weights_server):  # noqa: F811
    weights_server.files[fake_encoder.filename] = fake_encoder.content
    weights_server.broken.add(fake_encoder.filename)
    calls = []
    with pytest.raises(WeightsDownloadError, match="stopped after|broke off after"):
        download_pretrained(
            fake_encoder.name,
            lambda done, total: calls.append(done),
            url=weights_server.url(fake_encoder.filename),
        )
    assert 0 < max(calls) < len(fake_encoder.content)  # part of the body had arrived
    assert leftovers(fake_encoder) == []


def test_an_unreachable_server_says_so_and_how_to_do_it_by_hand(fake_encoder):  # noqa: F811
    url = f"http://127.0.0.1:{closed_port()}/models/{fake_encoder.filename}"
    with pytest.raises(WeightsDownloadError) as error:
        download_pretrained(fake_encoder.name, url=url, timeout=5)
    message = str(error.value)
    assert message.startswith("could not reach 127.0.0.1: ")
    assert f"copy the file {fake_encoder.filename}" in message and str(fake_encoder.cache) in message
    assert f"https://download.pytorch.org/models/{fake_encoder.filename}" in message
    assert leftovers(fake_encoder) == []


def test_an_http_error_names_the_answer(fake_encoder, weights_server):  # noqa: F811
    with pytest.raises(WeightsDownloadError, match="answered 404"):
        download_pretrained(fake_encoder.name, url=weights_server.url(fake_encoder.filename))
    assert leftovers(fake_encoder) == []


@pytest.mark.parametrize("stop", [KeyboardInterrupt, InterruptedError])  # Ctrl+C, a cancel button
def test_a_stop_mid_download_leaves_no_file(fake_encoder, weights_server, stop):  # noqa: F811
    weights_server.files[fake_encoder.filename] = fake_encoder.content

    def interrupt(done, total):
        if done:
            raise stop

    with pytest.raises(stop):
        download_pretrained(fake_encoder.name, interrupt, url=weights_server.url(fake_encoder.filename))
    assert leftovers(fake_encoder) == []


def test_an_unknown_encoder_is_refused(fake_encoder):  # noqa: F811
    with pytest.raises(ValueError, match="unknown encoder 'resnet9'"):
        download_pretrained("resnet9")
