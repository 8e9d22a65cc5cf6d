"""Colours of the loss plot from a napari theme, so the matplotlib figure matches the viewer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Curve colours per theme type: napari's own accents are too dim on its dark background.
_CURVE = {"dark": ("#6ea8fe", "#f0b429"), "light": ("#1f5fbf", "#b86e00")}


@dataclass(frozen=True)
class PlotColors:
    background: str
    text: str
    grid: str
    curve: str  # the loss lines
    marker: str  # the validation / stability markers


def plot_colors(name: str) -> PlotColors:
    """The colours for napari theme ``name`` (unknown names fall back to "dark")."""
    from napari.utils.theme import get_theme

    try:
        theme = get_theme(name)
    except ValueError:
        theme = get_theme("dark")
    curve, marker = _CURVE["light" if theme.type == "light" else "dark"]
    return PlotColors(theme.background.as_hex(), theme.text.as_hex(), theme.highlight.as_hex(), curve, marker)


def color_figure(figure: Any, axes: Sequence[Any], colors: PlotColors) -> None:
    """Background, spines, ticks, axis labels and grid of ``figure``; the first of ``axes`` is the
    main one (its face and grid), the others are twins drawn over it."""
    figure.set_facecolor(colors.background)
    for i, ax in enumerate(axes):
        ax.set_facecolor(colors.background if i == 0 else "none")
        for spine in ax.spines.values():
            spine.set_color(colors.grid)
        ax.tick_params(colors=colors.text, which="both", labelsize=8)
        ax.xaxis.label.set_color(colors.text)
        ax.yaxis.label.set_color(colors.text)
    axes[0].grid(True, color=colors.grid, lw=0.5, alpha=0.5)
