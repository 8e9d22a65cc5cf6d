"""Blitting for the loss plot: the figure's background (axes, ticks, labels, grid, legend) is
rendered once and cached; a new point only restores it and draws the line artists over it.

A full draw costs the GUI thread 20-50 ms (every tick label is laid out again; more while a run
loads the cores); restoring the background and drawing four lines costs 1-2 ms. The background is
rendered again only when it changes: new axis limits, a resize, the theme, the legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Blitter", "fit_limits", "grow_axes", "grow_limits"]


class Blitter:
    """Draws ``artists`` (made animated: a full draw leaves them out) over a cached background.

    Every full draw of the canvas, whoever asks for it (a resize, Qt's first paint, ``draw()``),
    caches the new background and draws the artists over it, so the canvas never shows a
    background without its curves.
    """

    def __init__(self, canvas: Any, artists: Sequence[Any]) -> None:
        self.canvas = canvas
        self.artists = list(artists)
        for artist in self.artists:
            artist.set_animated(True)
        self.full_draws = 0  # renders of the whole figure (tests, profiling)
        self.blits = 0
        self._background: Any = None
        self._renderer: Any = None
        canvas.mpl_connect("draw_event", self._on_draw)
        canvas.mpl_connect("resize_event", self.invalidate)

    def invalidate(self, _event: Any = None) -> None:
        """Forget the background: the next :meth:`update` reports that a full draw is needed."""
        self._background = None

    @property
    def valid(self) -> bool:
        """Whether a cached background matches the canvas as it is now (size, dpi)."""
        return self._background is not None and self._renderer is self.canvas.get_renderer()

    def update(self) -> bool:
        """Redraw the artists over the cached background and show them; ``False`` (nothing drawn)
        when there is no valid background, so the caller draws the whole figure instead."""
        if not self.valid:
            return False
        self.canvas.restore_region(self._background)
        self._draw_artists()
        # Not canvas.blit(): its synchronous repaint makes Qt paint the whole window now, the
        # viewer's canvas too (a vispy draw, tens of ms in software OpenGL) if it waits for one.
        # A posted update paints the buffer in a turn of its own, with whatever else is due.
        self.canvas.update()
        self.blits += 1
        return True

    def _on_draw(self, _event: Any) -> None:
        if self.canvas.is_saving():  # savefig draws the artists itself, at another dpi
            self.invalidate()
            return
        self.full_draws += 1
        self._renderer = self.canvas.get_renderer()
        self._background = self.canvas.copy_from_bbox(self.canvas.figure.bbox)
        self._draw_artists()

    def _draw_artists(self) -> None:
        for artist in self.artists:
            axes = artist.axes
            if artist.get_visible() and axes.get_visible():
                axes.draw_artist(artist)


def grow_limits(
    limits: tuple[float, float],
    data: tuple[float, float],
    *,
    headroom: float = 0.3,
    margin: float = 0.05,
    fixed_low: float | None = None,
) -> tuple[float, float]:
    """Limits that contain ``data`` = (low, high), changed only when the data left ``limits``.

    Limits that already hold the data are returned as they are. Otherwise the side the data
    outgrew moves past it by ``headroom`` times the data's span (plus ``margin``, matplotlib's
    autoscale margin), so the span grows geometrically (``headroom=1``: it doubles) and a curve of
    ``n`` points changes its limits O(log n) times. ``fixed_low`` pins the low limit (0 for an
    error rate).
    """
    low, high = limits
    data_low, data_high = data
    if fixed_low is not None:
        data_low = min(data_low, fixed_low)
    if low <= data_low and data_high <= high and high > low:
        return limits
    span = data_high - data_low
    if not span > 0:  # one point, or a flat curve: a span from its magnitude
        span = max(abs(data_high), abs(data_low)) * 0.1 or 1.0
    pad = margin * span
    if data_low < low or not high > low:
        low = data_low - pad - headroom * span
    if data_high > high or not high > low:
        high = data_high + pad + headroom * span
    if fixed_low is not None:
        low = fixed_low
    return low, high


def fit_limits(axes: Any, *, error_rate: bool) -> None:
    """Autoscale ``axes`` to its lines (matplotlib's margins), as a still view shows them; an error
    rate (in %, some points) from 0 to at least 1."""
    axes.relim()
    axes.set_autoscale_on(True)
    axes.autoscale_view()
    if error_rate:  # auto=None keeps autoscaling on
        axes.set_ylim(0, max(axes.get_ylim()[1], 1.0), auto=None)


def grow_axes(
    axes: Any,
    iterations: Sequence[int],
    values: Sequence[float],
    *,
    last_iteration: int | None,
    error_rate: bool,
) -> None:
    """The limits of a running curve, unchanged while they hold ``iterations`` and the finite
    ``values``: x reaches the run's ``last_iteration`` at once (doubles when it is not known), y
    starts at 0 for values that are never negative (losses, error rates) and grows by
    :func:`grow_limits`. A full draw costs the GUI thread ~100 ms while training runs on 2
    cores, so a run of known length draws everything two or three times."""
    first, last = min(iterations), max(iterations)
    if last_iteration is not None and last_iteration >= last:  # the run's whole x range at once
        x = grow_limits(axes.get_xlim(), (first, last_iteration), headroom=0.0)
    else:  # a run of unknown length (a time budget): x doubles
        x = grow_limits(axes.get_xlim(), (first, last), headroom=1.0)
    if x != axes.get_xlim():
        axes.set_xlim(x, auto=None)
    finite = np.asarray(values, float)
    finite = finite[np.isfinite(finite)]
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        zero = error_rate or low >= 0
        low, high = grow_limits(axes.get_ylim(), (low, high), fixed_low=0.0 if zero else None)
        y = (low, max(high, 1.0)) if error_rate else (low, high)
        if y != axes.get_ylim():
            axes.set_ylim(y, auto=None)
