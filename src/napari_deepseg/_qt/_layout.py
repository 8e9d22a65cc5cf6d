"""Sizing helpers that keep a tall settings form and a plot usable in one napari dock, and a row."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import QFrame, QHBoxLayout, QScrollArea, QSizePolicy, QVBoxLayout, QWidget


class FittingScrollArea(QScrollArea):
    """Scrolls ``widgets`` (stacked) only when the dock is too short for them; never takes more
    room than they need, and is never narrower than they are plus the scroll bar."""

    def __init__(self, *widgets: QWidget) -> None:
        super().__init__()
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in widgets:
            layout.addWidget(widget)
        self.setWidget(content)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Maximum)
        content.installEventFilter(self)

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QEvent.LayoutRequest:  # e.g. "Advanced" opened: ask the dock for room
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def sizeHint(self) -> QSize:  # noqa: N802
        hint = self.widget().sizeHint()
        frame = 2 * self.frameWidth()  # napari's stylesheet gives scroll areas a border
        width = hint.width() + self.verticalScrollBar().sizeHint().width() + frame
        return QSize(width, hint.height() + frame)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        # The vertical scroll bar takes its width from the content: without it in the minimum, a
        # dock at its narrowest cut the right edge (the pairs' +/- buttons) off when it showed.
        width = self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
        return QSize(width + 2 * self.frameWidth(), 120)


class YieldingBox(QWidget):
    """Holds a widget that asks for no more height than its minimum, so the widgets above get
    their height first and this one takes whatever is left."""

    def __init__(self, child: QWidget) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(child)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        return QSize(super().sizeHint().width(), self.minimumSizeHint().height())


def row(*widgets: QWidget) -> QWidget:
    """``widgets`` side by side, without margins."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return box
