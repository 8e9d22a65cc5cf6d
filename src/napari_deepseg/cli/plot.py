"""The loss curve of a training history as a PNG (matplotlib, optional)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..training.history import records, smooth


def plot_history(path: str | Path, history: Iterable[Mapping[str, Any]]) -> bool:
    """Loss (raw and smoothed) and smoothed error rate against iteration; ``False`` without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return False
    items = records(history)
    iterations = [r.iteration for r in items]
    losses = [r.loss for r in items]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    ax.plot(iterations, losses, lw=0.8, alpha=0.4, label="loss")
    ax.plot(iterations, smooth(losses), lw=1.8, label="loss (smoothed)")
    ax.plot(iterations, smooth(r.error_rate for r in items), lw=1.2, label="error rate (smoothed)")
    ax.set_xlabel("iteration")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True
