"""The convergence curve (loss or error rate against iteration), one themed matplotlib canvas.

Records arrive once per iteration; drawing is throttled to at most ten frames a second so a
fast training loop never floods the GUI thread, and a frame only blits the curves over the cached
axes (:mod:`._blit_figure`). The markers on the right axis (validation mIoU,
preview stability) come from the averaged weights: the model the user gets, not the one the
optimizer is stepping. The smoothing and the exported CSV are those of
:mod:`napari_deepseg.training.history`, as in the CLI's ``loss.csv``.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy import QtWidgets
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMenu, QToolButton, QVBoxLayout, QWidget

from ..training import history
from ._blit_figure import LossFigure
from ._plot_theme import plot_colors

if TYPE_CHECKING:
    import napari
    from qtpy.QtGui import QAction

    from ..training.events import TrainingProgress

__all__ = ["LossPlot"]

LOSS, ERROR_RATE = "Loss", "Error rate"
REDRAW_INTERVAL_MS = 100  # at most ~10 redraws per second


class LossPlot(QWidget):
    """Convergence curve of a training run.

    Parameters
    ----------
    viewer
        Colours follow this viewer's theme (and its changes); without one, napari's "dark".
    parent
        Qt parent.
    """

    def __init__(self, viewer: napari.viewer.Viewer | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._reset()
        self._expected = (False, False)  # markers the running run will add (validation, stability)
        self._expected_end: int | None = None  # its last iteration, if known
        self.redraw_count = 0  # how often the lines were actually updated (tests, profiling)

        self.curves = LossFigure()
        # The figure's parts, for tests and callers: the curves' data is what is plotted.
        self.figure, self.canvas, self.axes, self.val_axes = (
            self.curves.figure,
            self.curves.canvas,
            self.curves.axes,
            self.curves.val_axes,
        )
        self.raw_line, self.smooth_line = self.curves.raw_line, self.curves.smooth_line
        self.val_line, self.stability_line = self.curves.val_line, self.curves.stability_line

        self.metric_combo = QComboBox()
        self.metric_combo.addItems([LOSS, ERROR_RATE])
        self.metric_combo.setToolTip("Quantity plotted against iteration")
        self.metric_combo.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.metric_combo.currentTextChanged.connect(self.flush)  # Qt drops the unused argument
        self.last_value_label = QLabel("no training yet")
        self.last_value_label.setWordWrap(True)  # narrow docks: two lines rather than clipped
        self.export_button = QToolButton()
        self.export_button.setText("Export…")
        self.export_button.setPopupMode(QToolButton.InstantPopup)
        self.export_button.setStyleSheet("QToolButton::menu-indicator { image: none; }")
        menu = QMenu(self.export_button)
        menu.addAction("PNG image…").setData("png")
        menu.addAction("CSV table…").setData("csv")
        menu.triggered.connect(self._export_dialog)
        self.export_button.setMenu(menu)

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.metric_combo)
        bar.addWidget(self.last_value_label, 1)
        bar.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.canvas, 1)

        # Started by the first record after a draw: any number of appends cost one draw.
        self._timer = QTimer(self, singleShot=True, interval=REDRAW_INTERVAL_MS, timeout=self._live_redraw)
        self._layout_timer = QTimer(
            self, singleShot=True, interval=REDRAW_INTERVAL_MS, timeout=self.curves.render
        )

        self.apply_theme(viewer.theme if viewer is not None else "dark")
        if viewer is not None:
            emitter = viewer.events.theme
            emitter.connect(self._on_theme_event)
            ref = weakref.ref(self)
            self.destroyed.connect(lambda *_: _disconnect(emitter, ref))
        self._redraw()

    @property
    def full_draw_count(self) -> int:
        """How often the whole figure was rendered; every other frame was blitted."""
        return self.curves.blitter.full_draws

    @property
    def point_count(self) -> int:
        """Number of training points held."""
        return len(self._records)

    @property
    def iterations(self) -> list[int]:
        return [r.iteration for r in self._records]

    @property
    def values(self) -> list[float]:
        """Raw (unsmoothed) values of the current metric as plotted; error rate in %."""
        return self._shown(self._raw[self._metric])

    @property
    def _metric(self) -> str:  # not "metric": that would shadow QPaintDevice.metric()
        return self.metric_combo.currentText()

    def _shown(self, values: list[float]) -> list[float]:
        return (100.0 * np.asarray(values, float)).tolist() if self._metric == ERROR_RATE else list(values)

    def append(self, record: TrainingProgress) -> None:
        """Add one training record; the plot is redrawn at most every 100 ms."""
        self._add(record)  # never draw here
        if not self._timer.isActive():
            self._timer.start()

    def add_stability(self, iteration: int, stability: float) -> None:
        """Add the share of preview pixels that kept their class since the previous preview."""
        if math.isfinite(stability):
            self._stability.append((iteration, stability))
            if not self._timer.isActive():
                self._timer.start()

    def expect_run(
        self, *, last_iteration: int | None = None, validation: bool = False, stability: bool = False
    ) -> None:
        """Say what the coming run adds: the markers' legend rows and axis, and the x range up to
        ``last_iteration``, are laid out and drawn with the next frame, not when the first record
        or marker arrives mid-run (a layout pass and a full draw cost ~100 ms each on a busy CPU).
        No arguments: only what is there (a run's end)."""
        self._expected, self._expected_end = (validation, stability), last_iteration
        if not self._timer.isActive():
            self._timer.start()

    def set_history(self, records: list[dict[str, Any]] | list[TrainingProgress]) -> None:
        """Replace everything with a model's history (``model.history``, or records)."""
        self._reset()
        for record in history.records(records):
            self._add(record)
        self.flush()

    def clear(self) -> None:
        """Remove every point; the figure is drawn again with the next frame (within 100 ms), so
        pressing Start does not also wait for a full draw."""
        self._reset()
        self._redraw(render=False)
        self._timer.start()

    def flush(self) -> None:
        """Draw now (end of training, pause, tests)."""
        self._timer.stop()
        self._redraw()

    def _reset(self) -> None:
        self._records: list[TrainingProgress] = []
        self._raw: dict[str, list[float]] = {LOSS: [], ERROR_RATE: []}
        self._smooth: dict[str, list[float]] = {LOSS: [], ERROR_RATE: []}
        self._smoothers = {LOSS: history.Smoother(), ERROR_RATE: history.Smoother()}
        self._val_iterations: list[int] = []
        self._val_iou: list[float] = []
        self._stability: list[tuple[int, float]] = []

    def _add(self, record: TrainingProgress) -> None:
        self._records.append(record)
        for metric, value in ((LOSS, record.loss), (ERROR_RATE, record.error_rate)):
            self._raw[metric].append(value)
            self._smooth[metric].append(self._smoothers[metric].add(value))
        if record.validation is not None:
            self._val_iterations.append(record.iteration)
            self._val_iou.append(record.validation.mean_iou)

    def _live_redraw(self) -> None:
        self._redraw(tight=False)

    def _redraw(self, tight: bool = True, render: bool = True) -> None:
        """Show the records; ``tight`` (a still view): limits fitted to the data, else (a run)
        grown only when the data leaves them, so most frames are blitted."""
        self.redraw_count += 1
        metric, stability = self._metric, self._stability
        self.curves.show(
            self.iterations,
            (self._shown(self._raw[metric]), self._shown(self._smooth[metric])),
            ((self._val_iterations, self._val_iou), ([i for i, _ in stability], [s for _, s in stability])),
            ylabel="error rate (%)" if metric == ERROR_RATE else "loss",
            error_rate=metric == ERROR_RATE,
            last_iteration=self._records[-1].last_iteration if self._records else None,
            tight=tight,
            render=render,
            expected=self._expected,
            expected_x=(1, self._expected_end) if self._expected_end else None,
        )
        self.last_value_label.setText(self._summary())

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        self.curves.layout_stale = True
        self._layout_timer.start()  # laid out again once the resizing pauses, records or not
        super().resizeEvent(event)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self.curves.shown()

    def _summary(self) -> str:
        if not self._records:
            return "no training yet"
        value = self._shown(self._raw[self._metric][-1:])[0]
        parts = [
            f"iteration {self._records[-1].iteration}",
            f"error rate {value:.1f} %" if self._metric == ERROR_RATE else f"loss {value:.3g}",
        ]
        if self._val_iou and math.isfinite(self._val_iou[-1]):
            parts.append(f"val mIoU {self._val_iou[-1]:.2f}")
        # Word wrap may break only between the parts (non-breaking spaces inside each).
        return " · ".join(part.replace(" ", "\u00a0") for part in parts)

    def apply_theme(self, name: str) -> None:
        """Colour the figure like napari's theme ``name`` (unknown names fall back to "dark")."""
        self.curves.apply_colors(plot_colors(name))

    def _on_theme_event(self, event: Any) -> None:
        self.apply_theme(str(event.value))

    def export_png(self, path: str) -> None:
        """Save the figure as it looks now (theme colours included)."""
        self.flush()
        self.figure.savefig(path, format="png", dpi=150, facecolor=self.figure.get_facecolor())
        self.curves.saved()

    def export_csv(self, path: str) -> None:
        """The history CSV of :func:`napari_deepseg.training.history.write_csv` (as the CLI's)."""
        history.write_csv(path, self._records)

    def _export_dialog(self, action: QAction) -> None:
        kind = action.data()
        filters = {"png": "PNG image (*.png)", "csv": "CSV table (*.csv)"}
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export", f"training.{kind}", filters[kind])
        if path:
            (self.export_png if kind == "png" else self.export_csv)(path)


def _disconnect(emitter: Any, ref: weakref.ref[LossPlot]) -> None:
    widget = ref()
    if widget is not None:
        emitter.disconnect(widget._on_theme_event)
