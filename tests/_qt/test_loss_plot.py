from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from matplotlib.colors import to_hex

from napari_deepseg._qt.loss_plot import LossPlot
from napari_deepseg.training.events import TrainingProgress, ValidationMetrics
from napari_deepseg.training.history import COLUMNS, smooth


def record(i: int, *, validation: bool = False) -> TrainingProgress:
    metrics = (
        ValidationMetrics(
            loss=0.5, error_rate=0.1, iou=(0.5 + i / 1000, math.nan, 0.7), dice=(0.6, math.nan, 0.8)
        )
        if validation
        else None
    )
    return TrainingProgress(
        iteration=i,
        last_iteration=1000,
        loss=1.0 / i,
        error_rate=0.5 / (i + 1),
        learning_rate=1e-3,
        elapsed_seconds=0.1 * i,
        samples_per_second=40.0,
        validation=metrics,
    )


@pytest.fixture
def plot(qtbot) -> LossPlot:
    widget = LossPlot()
    qtbot.addWidget(widget)
    return widget


def test_append_and_switch_metric(plot):
    records = [record(i) for i in range(1, 11)]
    for r in records:
        plot.append(r)
    plot.flush()
    assert plot.point_count == 10
    assert list(plot.raw_line.get_xdata()) == list(range(1, 11))
    assert np.allclose(plot.raw_line.get_ydata(), [r.loss for r in records])
    assert plot.values == pytest.approx([r.loss for r in records])
    assert plot.axes.get_ylabel() == "loss"
    bottom, top = plot.axes.get_ylim()  # autoscaled to the data (not stuck at the empty plot's range)
    assert bottom <= min(plot.values) and top >= max(plot.values) and top < 2

    plot.metric_combo.setCurrentText("Error rate")
    assert np.allclose(plot.raw_line.get_ydata(), [100 * r.error_rate for r in records])
    assert plot.values == pytest.approx([100 * r.error_rate for r in records])
    assert "%" in plot.axes.get_ylabel()
    assert "%" in plot.last_value_label.text()
    assert plot.axes.get_ylim()[0] == 0 and plot.axes.get_ylim()[1] >= 25
    # the smoothed curve follows, lagging behind a decreasing series
    smoothed = np.asarray(plot.smooth_line.get_ydata())
    assert smoothed[0] == pytest.approx(100 * records[0].error_rate)  # debiased: starts on the data
    assert smoothed[-1] > 100 * records[-1].error_rate
    assert smoothed == pytest.approx(smooth(100 * r.error_rate for r in records))  # the one smoothing


def test_redraws_are_throttled(plot, qtbot):
    draws = []
    real_draw = plot.canvas.draw
    plot.canvas.draw = lambda *a, **k: (draws.append(1), real_draw(*a, **k))
    start = plot.redraw_count
    for i in range(1, 501):
        plot.append(record(i))
    assert plot.redraw_count == start  # append never draws
    qtbot.wait(300)
    assert 1 <= plot.redraw_count - start <= 5
    assert len(draws) <= 5
    assert plot.point_count == 500
    assert len(plot.raw_line.get_xdata()) == 500
    assert plot.raw_line.get_xdata()[-1] == 500


def test_validation_markers_only_where_present(plot):
    for i in range(1, 101):
        plot.append(record(i, validation=i % 50 == 0))
    plot.flush()
    assert list(plot.val_line.get_xdata()) == [50, 100]
    assert plot.val_line.get_ydata()[-1] == pytest.approx((0.6 + 0.7) / 2)  # NaN class ignored
    assert plot.val_axes.get_visible()
    assert "val\u00a0mIoU\u00a00.65" in plot.last_value_label.text()
    plot.clear()
    assert not plot.val_axes.get_visible()


def test_set_history_matches_append_and_clear(plot, qtbot):
    records = [record(i, validation=i in (3, 6)) for i in range(1, 8)]
    for r in records:
        plot.append(r)
    plot.flush()
    lines = ("raw_line", "smooth_line", "val_line")
    expected = [np.asarray(getattr(plot, name).get_ydata(), float).copy() for name in lines]

    other = LossPlot()
    qtbot.addWidget(other)
    history = [r.to_dict() for r in records]
    assert history[0]["validation"] is None and history[2]["validation"]["iou"][1] is None
    other.set_history(history)
    assert other.iterations == plot.iterations
    for name, values in zip(lines, expected):
        assert np.allclose(getattr(other, name).get_ydata(), values, equal_nan=True)
    assert list(other.val_line.get_xdata()) == [3, 6]

    other.clear()
    assert other.point_count == 0 and other.iterations == [] and len(other.raw_line.get_xdata()) == 0
    assert len(other.val_line.get_xdata()) == 0


def test_last_value_label(plot):
    assert plot.last_value_label.text() == "no training yet"
    for i in range(1, 121):
        plot.append(record(i))
    plot.flush()
    assert plot.last_value_label.text().replace("\u00a0", " ") == f"iteration 120 · loss {1 / 120:.3g}"


def test_export(plot, tmp_path):
    for i in range(1, 6):
        plot.append(record(i, validation=i == 5))
    csv_path, png_path = tmp_path / "loss.csv", tmp_path / "loss.png"
    plot.export_csv(str(csv_path))
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS  # the CLI's loss.csv layout
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    assert float(rows[1]["loss"]) == pytest.approx(0.5)
    assert float(rows[1]["error_rate"]) == pytest.approx(0.5 / 3)
    plot.flush()
    assert [float(r["loss_smoothed"]) for r in rows] == pytest.approx(list(plot.smooth_line.get_ydata()))
    assert rows[0]["val_mean_iou"] == ""
    assert float(rows[4]["val_mean_iou"]) == pytest.approx((0.505 + 0.7) / 2)

    plot.export_png(str(png_path))
    data = png_path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_follows_viewer_theme(make_napari_viewer, qtbot):
    from napari.utils.theme import get_theme

    viewer = make_napari_viewer()
    viewer.theme = "dark"
    widget = LossPlot(viewer)
    qtbot.addWidget(widget)

    def face() -> str:
        return to_hex(widget.axes.get_facecolor())

    dark = face()
    assert dark == to_hex(get_theme("dark").background.as_hex())
    viewer.theme = "light"
    assert face() == to_hex(get_theme("light").background.as_hex()) != dark
    assert to_hex(widget.axes.xaxis.label.get_color()) == to_hex(get_theme("light").text.as_hex())
    viewer.theme = "dark"
    assert face() == dark


def test_shows_and_paints(plot, qtbot):
    # Qt calls QPaintDevice.metric() etc. while painting: attribute names must not shadow them.
    for i in range(1, 21):
        plot.append(record(i, validation=i == 20))
    plot.resize(420, 300)
    plot.show()
    qtbot.waitExposed(plot)
    qtbot.wait(150)
    image = plot.grab().toImage()
    pixels = np.array(
        [image.pixelColor(x, y).getRgb()[:3] for x in range(image.width()) for y in range(image.height())]
    )
    curve = np.array([0x6E, 0xA8, 0xFE])  # the dark theme's curve colour (antialiased: nearly)
    assert (np.abs(pixels - curve).max(axis=1) < 30).sum() > 50
    assert plot.redraw_count >= 2 and "val\u00a0mIoU" in plot.last_value_label.text()


def test_preview_stability_and_what_the_markers_show(plot):
    for i in range(1, 11):
        plot.append(record(i, validation=i == 10))
        if i % 3 == 0:
            plot.add_stability(i, 1 - 0.1 / i)
    plot.add_stability(10, math.nan)  # nothing compared: no point
    plot.flush()
    assert list(plot.stability_line.get_xdata()) == [3, 6, 9]
    assert plot.stability_line.get_ydata()[-1] == pytest.approx(1 - 0.1 / 9)
    labels = [text.get_text() for text in plot._legend.get_texts()]
    assert "validation mIoU (averaged weights)" in labels and "preview stability" in labels
    assert plot.val_axes.get_ylabel() == "averaged weights"
    plot.clear()
    assert len(plot.stability_line.get_xdata()) == 0 and not plot.val_axes.get_visible()
