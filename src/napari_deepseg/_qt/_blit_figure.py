"""The loss plot's figure: the metric's raw and smoothed curves, the averaged weights' markers on a
twin axis, a placeholder and a legend above, drawn by blitting (:class:`._blit.Blitter`).

While a run goes on (``tight=False``) the limits only grow, geometrically, so almost every frame
is blitted; a still view (pause, end, history, metric change) fits them to the data again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer

from ._blit import Blitter, fit_limits, grow_axes, grow_limits
from ._plot_theme import PlotColors, color_figure

__all__ = ["LossFigure"]


class LossFigure:
    """One matplotlib figure on a Qt canvas (``canvas`` is the widget to lay out)."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(4, 2.5), dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(160)
        self.axes = self.figure.add_subplot()
        self.val_axes = self.axes.twinx()
        self.val_axes.set_ylim(0, 1)
        self.val_axes.set_ylabel("averaged weights", fontsize=9)
        (self.raw_line,) = self.axes.plot([], [], lw=0.8, alpha=0.4, label="raw")
        (self.smooth_line,) = self.axes.plot([], [], lw=1.8, label="smoothed")
        (self.val_line,) = self.val_axes.plot(
            [], [], ls="none", marker="o", ms=4, label="validation mIoU (averaged weights)"
        )
        (self.stability_line,) = self.val_axes.plot(
            [], [], ls="none", marker="x", ms=4, label="preview stability"
        )
        self.axes.set_xlabel("iteration", fontsize=9)
        self.placeholder = self.axes.text(
            0.5,
            0.5,
            "training progress appears here",
            ha="center",
            va="center",
            fontsize=9,
            transform=self.axes.transAxes,
        )
        self.legend: Any = None
        self._legend_handles: list[Any] = []
        self._text_color = "white"
        # The placeholder too: the first record hides it without changing the background.
        lines = (self.raw_line, self.smooth_line, self.val_line, self.stability_line, self.placeholder)
        self.blitter = Blitter(self.canvas, lines)
        self._drawn: tuple[Any, ...] | None = None  # what the cached background shows
        # Constrained layout costs as much as a draw; it runs only when something that moves the
        # axes changed (legend, labels, theme, size), not for new limits.
        self.layout_stale = True
        self._draw_timer = QTimer(self.canvas, singleShot=True, interval=1, timeout=self._draw)

    def _draw(self) -> None:
        if self.canvas.isVisible():
            self.canvas.draw()

    def show(
        self,
        iterations: Sequence[int],
        values: tuple[Sequence[float], Sequence[float]],
        markers: tuple[tuple[Sequence[int], Sequence[float]], tuple[Sequence[int], Sequence[float]]],
        *,
        ylabel: str,
        error_rate: bool,
        last_iteration: int | None,
        tight: bool,
        render: bool = True,
        expected: tuple[bool, bool] = (False, False),
        expected_x: tuple[int, int] | None = None,
    ) -> None:
        """Set the curves (raw, smoothed), the markers (validation, stability: x and y each) and
        draw (if ``render``); ``tight``: limits fitted to the data, else grown only when the data
        left them. What a run about to start will add, laid out now rather than when it arrives:
        ``expected`` (validation, stability) markers, whose legend rows and axis are shown, and
        the iterations ``expected_x`` (first, last) of a run still without points (not ``tight``)
        with a y range that holds its first loss."""
        raw, smoothed = values
        self.raw_line.set_data(iterations, raw)
        self.smooth_line.set_data(iterations, smoothed)
        (val_x, val_y), (stability_x, stability_y) = markers
        self.val_line.set_data(val_x, val_y)
        self.stability_line.set_data(stability_x, stability_y)
        validation, stability = bool(len(val_x)) or expected[0], bool(len(stability_x)) or expected[1]
        self.val_axes.set_visible(validation or stability)
        if self.axes.get_ylabel() != ylabel:
            self.axes.set_ylabel(ylabel, fontsize=9)
            self.layout_stale = True
        self.placeholder.set_visible(not len(iterations))
        self._update_legend(validation, stability)
        if tight or not len(iterations):
            fit_limits(self.axes, error_rate=error_rate and bool(len(iterations)))
            if not tight and expected_x is not None:
                # x: what grow_axes gives the first record; y: what holds a first loss up to 1 (a
                # cross-entropy starts near ln(classes)) or any error rate, so it only blits.
                self.axes.set_xlim(grow_limits(self.axes.get_xlim(), expected_x, headroom=0.0), auto=None)
                self.axes.set_ylim(0.0, 100.0 if error_rate else 1.0, auto=None)
        else:
            values = [*raw, *smoothed]
            grow_axes(self.axes, iterations, values, last_iteration=last_iteration, error_rate=error_rate)
        if render:
            self.render()

    def render(self) -> None:
        """Blit the curves over the cached background, or draw everything if the background
        changed (limits, labels, legend, the markers' axis, layout) or none is cached."""
        if not self.canvas.isVisible():  # drawn when shown (see shown())
            self._drawn = None
            return
        background = (
            self.axes.get_xlim(),
            self.axes.get_ylim(),
            self.axes.get_ylabel(),
            self.val_axes.get_visible(),
            tuple(map(id, self._legend_handles)),
        )
        if self.layout_stale:
            # The layout pass costs as much as a draw (~50 ms): the draw follows on a timer, not a
            # posted event, so that Qt's overdue timers (the viewer's) run between the two.
            self.layout_stale = False
            self.figure.set_layout_engine("constrained")
            self.figure.get_layout_engine().execute(self.figure)
            self.figure.set_layout_engine("none")
            self.blitter.invalidate()
            self._draw_timer.start()
        elif background != self._drawn or not self.blitter.update():
            self.canvas.draw()
        self._drawn = background

    def shown(self) -> None:
        """The canvas became visible: it was not drawn while hidden."""
        self._drawn = None
        self.canvas.draw_idle()  # before its first paint

    def saved(self) -> None:
        """After ``savefig``: the canvas's renderer was replaced at another dpi, draw again."""
        self._drawn = None
        self.render()

    def _update_legend(self, validation: bool, stability: bool) -> None:
        # Above the axes, not inside: the curves and markers fill every corner at some point.
        handles = (
            [self.raw_line, self.smooth_line]
            + ([self.val_line] if validation else [])
            + ([self.stability_line] if stability else [])
        )
        if handles == self._legend_handles:
            return
        self._legend_handles = handles
        if self.legend is not None:
            self.legend.remove()
        self.layout_stale = True
        self.figure.set_layout_engine("constrained")  # "outside" legend placement needs it
        self.legend = self.figure.legend(
            handles=handles, loc="outside upper right", ncols=2, fontsize=8, frameon=False, handlelength=1.5
        )
        for handle in self.legend.legend_handles:  # copies of the animated lines: background
            handle.set_animated(False)
        self._style_legend()

    def apply_colors(self, colors: PlotColors) -> None:
        """Colour everything with ``colors`` and draw again."""
        self._text_color = colors.text
        color_figure(self.figure, (self.axes, self.val_axes), colors)
        for line, color in (
            (self.raw_line, colors.curve),
            (self.smooth_line, colors.curve),
            (self.val_line, colors.marker),
            (self.stability_line, colors.marker),
        ):
            line.set_color(color)
        self.placeholder.set_color(colors.text)
        self._style_legend()
        self._drawn = None
        self.canvas.draw_idle()

    def _style_legend(self) -> None:
        for label in self.legend.get_texts() if self.legend is not None else []:
            label.set_color(self._text_color)
