"""``napari-deepseg train --tensorboard DIR``: an event file with the run's scalars and previews."""

import sys

import pytest
import tifffile

from napari_deepseg import SegmentationModel
from napari_deepseg.cli import main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def train_args(tmp_path, fluo_crop, *extra):
    image, labels = fluo_crop
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    options = "--iterations 3 --patch-size 64 --batch-size 2 --no-pretrained --validation-fraction 0"
    files = ["--image", tmp_path / "image.tif", "--labels", tmp_path / "labels.tif"]
    return [
        "train",
        *map(str, files),
        *options.split(),
        "--output",
        str(tmp_path / "model.safetensors"),
        *extra,
    ]


def test_train_writes_an_event_file(tmp_path, fluo_crop):
    runs = tmp_path / "runs"
    args = train_args(tmp_path, fluo_crop, "--tensorboard", str(runs), "--tensorboard-preview-every", "2")
    assert main(args) == 0
    assert len(list(runs.glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(runs))
    events.Reload()
    history = SegmentationModel.load(tmp_path / "model.safetensors").history
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    assert [e.step for e in events.Images("preview/prediction")] == [2, 3]


def test_a_missing_tensorboard_is_one_line_naming_the_extra(tmp_path, fluo_crop, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert main(train_args(tmp_path, fluo_crop, "--tensorboard", str(tmp_path / "runs"))) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-deepseg train: error: TensorBoard logging needs")
    assert 'pip install "napari-deepseg[tensorboard]"' in err and len(err.splitlines()) == 1
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "runs").exists()


def test_a_negative_preview_interval_is_refused(tmp_path, fluo_crop, capsys):
    args = train_args(
        tmp_path, fluo_crop, "--tensorboard", str(tmp_path / "r"), "--tensorboard-preview-every", "-1"
    )
    assert main(args) == 1
    assert "preview_every must be >= 0" in capsys.readouterr().err
