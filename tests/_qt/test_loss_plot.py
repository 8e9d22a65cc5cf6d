from __future__ import annotations

import csv
import dataclasses
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
    labels = [text.get_text() for text in plot.curves.legend.get_texts()]
    assert "validation mIoU (averaged weights)" in labels and "preview stability" in labels
    assert plot.val_axes.get_ylabel() == "averaged weights"
    plot.clear()
    assert len(plot.stability_line.get_xdata()) == 0 and not plot.val_axes.get_visible()


# ------------------------------------------------------------------ blitting
def noisy_records(n: int, seed: int = 0) -> list[TrainingProgress]:
    """A training-like curve: decaying loss with noise and a few spikes, validation every 50."""
    rng = np.random.default_rng(seed)
    loss = 1.5 * np.exp(-np.arange(n) / 150) + 0.05 + rng.normal(0, 0.03, n)
    loss[rng.choice(n, 5, replace=False)] += 0.8
    return [
        dataclasses.replace(record(i, validation=i % 50 == 0), loss=float(abs(v)))
        for i, v in enumerate(loss, start=1)
    ]


@pytest.fixture
def shown_plot(plot, qtbot) -> LossPlot:
    plot.resize(420, 300)
    plot.show()
    qtbot.waitExposed(plot)
    plot.flush()
    return plot


def live_frame(plot: LossPlot) -> None:
    plot._timer.stop()
    plot._live_redraw()  # what the throttle timer calls during a run


def pixels(plot: LossPlot) -> np.ndarray:
    return np.asarray(plot.canvas.buffer_rgba())[..., :3].astype(int).copy()


def line_data(plot: LossPlot) -> list[np.ndarray]:
    lines = (plot.raw_line, plot.smooth_line, plot.val_line, plot.stability_line)
    return [np.asarray(d, float) for line in lines for d in line.get_data()]


def test_blitted_frames_equal_a_full_redraw(shown_plot, qtbot):
    plot = shown_plot
    records = noisy_records(300)
    full_before = plot.full_draw_count
    for i, r in enumerate(records):
        plot.append(r)
        if i % 3 == 0:
            plot.add_stability(r.iteration, 0.9 + 0.1 * np.sin(i))
        live_frame(plot)
    assert plot.curves.blitter.blits > 250  # most frames were blitted
    assert plot.full_draw_count - full_before < 30
    blitted, data = pixels(plot), line_data(plot)
    assert (np.abs(blitted - pixels_of_background(plot)).max(axis=2) > 60).sum() > 200  # curves drawn

    plot.canvas.draw()  # the same limits, everything drawn at once
    full = pixels(plot)
    assert blitted.shape == full.shape
    differ = np.abs(blitted - full).max(axis=2) > 40
    assert differ.mean() < 0.002, differ.sum()  # only where a curve meets a spine (drawn in another order)

    other = LossPlot()  # the same records, drawn in one go: the same curves
    qtbot.addWidget(other)
    for r in records:
        other.append(r)
    for i, r in enumerate(records):
        if i % 3 == 0:
            other.add_stability(r.iteration, 0.9 + 0.1 * np.sin(i))
    other.flush()
    for a, b in zip(data, line_data(other)):
        assert np.array_equal(a, b, equal_nan=True)


def pixels_of_background(plot: LossPlot) -> np.ndarray:
    lines = plot.curves.blitter.artists
    visible = [line.get_visible() for line in lines]
    for line in lines:
        line.set_visible(False)
    plot.canvas.draw()
    background = pixels(plot)
    for line, shown in zip(lines, visible):
        line.set_visible(shown)
    plot.canvas.draw()
    return background


@pytest.mark.parametrize("metric", ["Loss", "Error rate"])
@pytest.mark.parametrize("end", [1000, None], ids=["known end", "time budget"])
def test_full_draws_are_logarithmic_and_limits_hold_the_data(shown_plot, metric, end):
    plot = shown_plot
    plot.metric_combo.setCurrentText(metric)
    start = plot.full_draw_count
    for r in noisy_records(500, seed=1):
        plot.append(dataclasses.replace(r, last_iteration=end))
        live_frame(plot)
        x, y = (
            np.asarray(plot.raw_line.get_xdata()),
            np.concatenate([plot.raw_line.get_ydata(), plot.smooth_line.get_ydata()]),
        )
        (left, right), (bottom, top) = plot.axes.get_xlim(), plot.axes.get_ylim()
        assert left <= x.min() and x.max() <= right
        assert bottom <= y.min() and y.max() <= top
        if end is not None:
            assert right >= end  # the run's whole x range from the first point
    full = plot.full_draw_count - start
    # x: once for a known end, else it doubles (9 times to 500); y: 0-based, grows by >= 1.35
    # times each time; the legend and the validation axis appearing: one layout each
    assert 1 <= full <= (6 if end else 2 * math.log2(500) + 4), full
    assert plot.curves.blitter.blits >= 500 - 2 * full  # the rest: a layout pass (drawn next time)
    assert plot.axes.get_xlim()[1] <= (end or 500) * 2.1  # never far past the run's end / data
    plot.flush()  # a still view: fitted to the data again, as before blitting
    assert plot.axes.get_xlim()[1] < 500 * 1.06


def test_hidden_plot_draws_when_shown(plot, qtbot):
    qtbot.wait(10)
    before = plot.full_draw_count
    for r in noisy_records(40):
        plot.append(r)
        live_frame(plot)
    assert plot.full_draw_count == before and plot.curves.blitter.blits == 0  # hidden: not rendered
    assert len(plot.raw_line.get_xdata()) == 40  # but the curves hold the data
    plot.resize(420, 300)
    plot.show()
    qtbot.waitExposed(plot)
    qtbot.waitUntil(lambda: plot.full_draw_count > before)
    curve = np.array([0x6E, 0xA8, 0xFE])
    assert (np.abs(pixels(plot) - curve).max(axis=2) < 30).sum() > 50  # the curves, not only axes


def test_blitting_survives_export_and_resize(shown_plot, qtbot, tmp_path):
    plot = shown_plot
    for r in noisy_records(60):
        plot.append(r)
        live_frame(plot)
    plot.export_png(str(tmp_path / "loss.png"))
    plot.append(record(61))
    live_frame(plot)  # the renderer was replaced at the export's dpi: drawn again, not blitted
    assert pixels(plot).shape[:2] == (plot.canvas.height(), plot.canvas.width())
    plot.resize(500, 340)
    qtbot.waitUntil(lambda: pixels(plot).shape[1] == plot.canvas.width())
    plot.append(record(62))
    live_frame(plot)  # resized: laid out now, drawn in the next turn of the event loop
    qtbot.waitUntil(lambda: plot.curves.blitter.valid)
    blits = plot.curves.blitter.blits
    plot.append(record(63))
    live_frame(plot)
    assert plot.curves.blitter.blits == blits + 1  # blitted again, at the new size
    assert pixels(plot).shape[:2] == (plot.canvas.height(), plot.canvas.width())


def test_grow_limits():
    from napari_deepseg._qt._blit import grow_limits

    assert grow_limits((0.0, 10.0), (1.0, 9.0)) == (0.0, 10.0)  # holds the data: unchanged
    low, high = grow_limits((0.0, 10.0), (1.0, 12.0))
    assert low == 0.0 and high >= 12.0 + 0.3 * 11
    assert grow_limits((0.0, 1.0), (0.2, 50.0), fixed_low=0.0)[0] == 0.0
    limits, changes = (0.0, 1.0), 0
    for n in range(1, 10_001):  # x of a run: doubles
        new = grow_limits(limits, (1.0, float(n)), headroom=1.0)
        changes += new != limits
        limits = new
        assert limits[0] <= 1 and n <= limits[1]
    assert changes <= math.log2(10_000) + 2
    assert grow_limits((0.0, 0.0), (3.0, 3.0))[0] < 3.0 < grow_limits((0.0, 0.0), (3.0, 3.0))[1]


def _legend_labels(plot: LossPlot) -> list[str]:
    return [text.get_text() for text in plot.curves.legend.get_texts()]


@pytest.mark.parametrize("expected", [True, False], ids=["expected at Start", "not expected"])
def test_an_expected_marker_is_laid_out_at_start_and_its_first_point_only_blits(shown_plot, qtbot, expected):
    plot = shown_plot
    plot.expect_run(last_iteration=1000, stability=expected)
    plot.clear()
    live_frame(plot)  # Start's frame
    qtbot.waitUntil(lambda: not plot.curves._draw_timer.isActive())  # its draw, after the layout
    assert ("preview stability" in _legend_labels(plot)) is expected
    assert plot.val_axes.get_visible() is expected
    full = plot.full_draw_count
    assert plot.axes.get_xlim()[1] >= 1000  # the run's x range before its first point
    for i in range(1, 6):
        plot.append(record(i))
        live_frame(plot)
    assert plot.full_draw_count == full  # so the first records only blit
    blits = plot.curves.blitter.blits
    plot.add_stability(5, 0.9)  # the first preview's marker
    live_frame(plot)
    if expected:  # the background already held its legend row and axis: one blit, no layout
        assert plot.full_draw_count == full and plot.curves.blitter.blits == blits + 1
        assert not plot.curves.layout_stale and not plot.curves._draw_timer.isActive()
    else:  # the legend grows: a layout pass now, a full draw next turn
        assert plot.curves._draw_timer.isActive()
        qtbot.waitUntil(lambda: plot.full_draw_count > full)
    assert "preview stability" in _legend_labels(plot)
    plot.expect_run()  # the run ends: the legend names what was plotted
    plot.flush()
    assert "preview stability" in _legend_labels(plot) and plot.val_axes.get_visible()
    plot.expect_run(stability=True)
    plot.clear()
    plot.expect_run()
    plot.flush()  # a run that previewed nothing: no row for it
    assert "preview stability" not in _legend_labels(plot) and not plot.val_axes.get_visible()
