"""``napari-deepseg weights list | download``: the cache listing, a download from a local server,
and one-line errors with exit code 1."""

import pytest

from napari_deepseg.cli import main

from ..models.weights_server import closed_port, fake_encoder, weights_server  # noqa: F401 (fixtures)


def test_list_then_download_then_list(fake_encoder, weights_server, capsys):  # noqa: F811
    weights_server.files[fake_encoder.filename] = fake_encoder.content
    assert main(["weights", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(rows) == {"vgg16", "vgg16_bn", "resnet18", "resnet34", "resnet50", "resnet101"}
    assert "missing" in rows["resnet18"] and str(fake_encoder.cached) in rows["resnet18"]

    url = weights_server.url(fake_encoder.filename)
    assert main(["weights", "download", "resnet18", "--url", url]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"resnet18: saved {fake_encoder.cached}"
    assert fake_encoder.cached.read_bytes() == fake_encoder.content
    assert "resnet18" in captured.err  # the tqdm bar

    assert main(["weights", "download", "resnet18", "--url", url]) == 0
    assert "already in the cache" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resnet18")]
    assert listed == [f"resnet18   cached   {fake_encoder.cached}"]
    assert weights_server.requests == [fake_encoder.filename]


def test_a_bad_checksum_exits_1_with_one_line(fake_encoder, weights_server, capsys):  # noqa: F811
    weights_server.files[fake_encoder.filename] = b"not the weights"
    assert main(["weights", "download", "resnet18", "--url", weights_server.url(fake_encoder.filename)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("napari-deepseg weights: error: the file from") and "is damaged" in err
    assert not fake_encoder.cache.exists() or not any(fake_encoder.cache.iterdir())


def test_offline_exits_1_naming_the_server_and_the_file(fake_encoder, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("NAPARI_DEEPSEG_WEIGHTS_URL", f"http://127.0.0.1:{closed_port()}/models")
    assert main(["weights", "download", "resnet18"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("napari-deepseg weights: error: could not reach 127.0.0.1:")
    assert f"copy the file {fake_encoder.filename}" in err


def test_bad_arguments(fake_encoder, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as exit_:
        main(["weights", "download", "resnet9"])
    assert exit_.value.code == 2 and "invalid choice: 'resnet9'" in capsys.readouterr().err
    assert main(["weights", "download", "resnet18", "resnet34", "--url", "http://127.0.0.1:1/x"]) == 1
    assert "--url names one file" in capsys.readouterr().err
