"""``napari-deepseg train`` and ``predict``: files in, files out, one-line errors."""

import csv

import numpy as np
import pytest
import tifffile

from napari_deepseg import SegmentationModel
from napari_deepseg.cli import main
from napari_deepseg.training.history import COLUMNS


@pytest.fixture()
def files(tmp_path, fluo_crop):
    image, labels = fluo_crop
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    return tmp_path


def test_train_then_predict(files, capsys):
    model = files / "model.safetensors"
    assert (
        main(
            [
                "train",
                "--image",
                str(files / "image.tif"),
                "--labels",
                str(files / "labels.tif"),
                "--iterations",
                "3",
                "--patch-size",
                "64",
                "--batch-size",
                "2",
                "--no-pretrained",
                "--validation-fraction",
                "0",
                "--class-names",
                "background,nucleus",
                "--output",
                str(model),
                "--history",
                str(files / "history.csv"),
            ]
        )
        == 0
    )
    loaded = SegmentationModel.load(model)
    assert loaded.class_names == ("background", "nucleus") and loaded.iterations_trained == 3
    with open(files / "history.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS and [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([h["loss"] for h in loaded.history])
    out = files / "pred.tif"
    probs = files / "probs.tif"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--image",
                str(files / "image.tif"),
                "--output",
                str(out),
                "--probabilities",
                str(probs),
                "--min-probability",
                "0.9",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    labels = tifffile.imread(out)
    p = tifffile.imread(probs)
    assert labels.shape == (64, 64) and p.shape == (2, 64, 64)
    expected = np.where(p.max(0) >= 0.9, p.argmax(0) + 1, 0)
    assert np.mean(labels == expected) > 0.999  # at most quantisation-step differences
    assert "wrote labels" in capsys.readouterr().out

    streamed = files / "streamed.tif"  # no --probabilities: written band by band into a memory map
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--image",
                str(files / "image.tif"),
                "--output",
                str(streamed),
                "--min-probability",
                "0.9",
                "--precision",
                "fp32",
                "--tile-size",
                "32",
                "--overlap",
                "8",
            ]
        )
        == 0
    )
    written = tifffile.imread(streamed)
    assert written.dtype == np.uint8
    tiled = loaded.predict(
        tifffile.imread(files / "image.tif"), min_probability=0.9, precision="fp32", tile_size=32, overlap=8
    )
    np.testing.assert_array_equal(written, tiled)
    shares = {k: np.mean(written == k) for k in (0, 1, 2)}
    expected = f"background: {shares[1]:.1%}, nucleus: {shares[2]:.1%}"
    assert expected in capsys.readouterr().out

    mirrored = files / "mirrored.tif"
    args = ["--model", str(model), "--image", str(files / "image.tif"), "--precision", "fp32"]
    assert (
        main(["predict", *args, "--output", str(mirrored), "--probabilities", str(probs), "--mirroring"]) == 0
    )
    image = tifffile.imread(files / "image.tif")
    np.testing.assert_allclose(
        tifffile.imread(probs), loaded.predict_proba(image, precision="fp32", mirroring=True), atol=1e-6
    )
    assert not np.allclose(tifffile.imread(probs), p, atol=1e-4)


def test_bad_input_exits_non_zero_with_a_message(files, capsys):
    code = main(
        [
            "train",
            "--image",
            str(files / "image.tif"),
            "--labels",
            str(files / "missing.tif"),
            "--output",
            str(files / "m.safetensors"),
        ]
    )
    assert code == 1
    assert "missing.tif" in capsys.readouterr().err
    (files / "junk.safetensors").write_bytes(b"not a model")
    code = main(
        [
            "predict",
            "--model",
            str(files / "junk.safetensors"),
            "--image",
            str(files / "image.tif"),
            "--output",
            str(files / "o.tif"),
        ]
    )
    assert code == 1
    assert "junk.safetensors" in capsys.readouterr().err


def test_train_for_minutes(files):
    model = files / "timed.safetensors"
    assert (
        main(
            [
                "train",
                "--image",
                str(files / "image.tif"),
                "--labels",
                str(files / "labels.tif"),
                "--minutes",
                "0.02",
                "--patch-size",
                "64",
                "--batch-size",
                "2",
                "--no-pretrained",
                "--validation-fraction",
                "0",
                "--output",
                str(model),
            ]
        )
        == 0
    )
    loaded = SegmentationModel.load(model)
    assert loaded.config.max_minutes == 0.02 and loaded.config.iterations is None
    assert loaded.history[-1]["elapsed_seconds"] >= 1.2 and loaded.iterations_trained >= 1
