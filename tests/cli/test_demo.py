"""``napari-deepseg demo``: headless it trains, predicts and writes the results it names."""

import csv
import re
import sys

import numpy as np
import pytest
import tifffile

from napari_deepseg import SegmentationModel, sample_data
from napari_deepseg.cli import main
from napari_deepseg.training.history import COLUMNS


def test_headless_demo_writes_what_it_says(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--headless", "--iterations", "2", "--device", "cpu", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    model = SegmentationModel.load(out / "model.safetensors")
    assert model.iterations_trained == 2 and model.class_names == ("background", "nucleus")
    labels = tifffile.imread(out / "labels.tif")
    probabilities = tifffile.imread(out / "probabilities.tif")
    assert probabilities.shape == (2, *labels.shape)
    np.testing.assert_array_equal(labels, probabilities.argmax(0) + 1)
    with open(out / "loss.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS and [r[0] for r in rows[1:]] == ["1", "2"]
    # the printed IoU is the nucleus IoU of the written labels against the full mask
    truth = sample_data.load_sample_mask("fluorescence").astype(bool)
    nucleus = labels == 2
    iou = (nucleus & truth).sum() / (nucleus | truth).sum()
    printed_iou = float(re.search(r"full ground-truth mask .*: ([0-9.]+)", printed).group(1))
    assert printed_iou == pytest.approx(iou, abs=5e-4)
    assert f"trained {model.summary()} in" in printed


def test_demo_without_napari_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "napari_deepseg._qt.launch", None)  # importing it fails
    assert main(["demo", "--iterations", "1"]) == 1
    assert "pip install 'napari-deepseg[all]'" in capsys.readouterr().err
