"""Form helpers over magicgui widgets, and the one spin box magicgui does not have.

magicgui's ``FloatSpinBox`` shows a fixed number of decimals (1e-4 reads "0.00" at its default
precision, "0.0001000000" at enough of it) and steps linearly; a learning rate wants %g text,
1-2-5 steps per decade and a "default" entry, so :class:`ScientificSpinBox` stays a Qt subclass,
wrapped as a magicgui widget by :func:`scientific_spin`.
"""

from __future__ import annotations

from typing import Any

from magicgui.backends._qtpy.widgets import FloatSpinBox as _QtFloatSpinBox
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox
from magicgui.widgets.bases import RangedWidget
from qtpy.QtGui import QValidator
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QWidget
from superqt import QCollapsible


class ScientificSpinBox(QDoubleSpinBox):
    """A spin box for rates such as 1e-3: shown in %g notation, stepped along 1-2-5 per decade."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.start_value = 1e-3  # where "+" goes from the minimum (e.g. from "default")
        self.setDecimals(10)

    def textFromValue(self, value: float) -> str:  # noqa: N802 (Qt override)
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802
        if self.specialValueText() and text == self.specialValueText():
            return self.minimum()
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> tuple[Any, str, int]:
        if self.specialValueText() and text == self.specialValueText():
            return QValidator.Acceptable, text, pos
        try:
            value = float(text)
        except ValueError:
            return QValidator.Intermediate, text, pos
        ok = self.minimum() <= value <= self.maximum()
        return (QValidator.Acceptable if ok else QValidator.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802
        if self.value() <= self.minimum() and steps > 0:
            self.setValue(self.start_value)
            return
        ladder = [m * 10.0**e for e in range(-8, 2) for m in (1, 2, 5)]
        ladder = [v for v in ladder if self.minimum() < v <= self.maximum()]
        value, eps = self.value(), 1e-9
        if steps > 0:  # from the rung at or below the value, so 3e-4 goes up to 5e-4 and down to 2e-4
            index = sum(v <= value * (1 + eps) for v in ladder) - 1 + steps
        else:
            index = sum(v < value * (1 - eps) for v in ladder) + steps
        self.setValue(self.minimum() if index < 0 else ladder[min(index, len(ladder) - 1)])


class _ScientificBackend(_QtFloatSpinBox):
    def __init__(self, **kwargs: Any) -> None:
        super(_QtFloatSpinBox, self).__init__(ScientificSpinBox, **kwargs)

    def _mgui_set_step(self, value: float) -> None:  # the ladder steps, not a fixed step
        pass


def scientific_spin(value: float, maximum: float, label: str, tooltip: str) -> RangedWidget:
    """A magicgui ranged widget whose native widget is a :class:`ScientificSpinBox` (minimum 0)."""
    return RangedWidget(
        value=value,
        min=0.0,
        max=maximum,
        step=None,
        label=label,
        tooltip=tooltip,
        widget_type=_ScientificBackend,
    )


def int_spin(label: str, minimum: int, maximum: int, step: int, tooltip: str) -> SpinBox:
    return SpinBox(value=minimum, min=minimum, max=maximum, step=step, label=label, tooltip=tooltip)


def float_spin(label: str, maximum: float, step: float, tooltip: str) -> FloatSpinBox:
    return FloatSpinBox(value=0.0, min=0.0, max=maximum, step=step, label=label, tooltip=tooltip)


def choice_combo(items: dict[Any, str], label: str, tooltip: str = "") -> ComboBox:
    """A combo box showing ``items``' texts whose ``value`` is the key (an Enum's ``.value``)."""
    combo = ComboBox(
        choices=[(text, getattr(key, "value", key)) for key, text in items.items()],
        label=label,
        tooltip=tooltip,
    )
    compact(combo)
    return combo


def compact(combo: ComboBox, characters: int = 8) -> ComboBox:
    """Let long item texts shrink to ``characters`` instead of widening the dock."""
    combo.native.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.native.setMinimumContentsLength(characters)
    return combo


def select(combo: ComboBox, value: Any) -> None:
    """Choose ``value``; one that is not offered (a device named in a loaded model) is added."""
    value = getattr(value, "value", value)
    if value not in combo.choices:
        combo.set_choice(str(value), value)
    combo.value = value


def indented(checkbox: CheckBox) -> Container:
    """``checkbox`` in a row with an empty field label, so it lines up with the labelled values."""
    row = Container(widgets=[checkbox], layout="horizontal", labels=False, label=" ")
    row.margins = (0, 0, 0, 0)
    return row


def flush(collapsible: QCollapsible) -> QCollapsible:
    """No indent for ``collapsible``'s content (napari's style sheet pads every frame by 1 px)."""
    collapsible.setObjectName("flush_collapsible")
    collapsible.setStyleSheet("#flush_collapsible { padding: 0px; }")
    collapsible.layout().setContentsMargins(0, 0, 0, 0)
    collapsible.content().layout().setContentsMargins(0, 0, 0, 0)
    return collapsible


def align_labels(*containers: Container) -> None:
    """Give the field labels of ``containers`` one width, the widest's, so the values form one column.

    magicgui unifies the widths per container from the application font; under napari's style
    sheet the labels are wider than that measure, so the polished labels are measured instead.
    """
    labels = [
        labelled._label_widget.native
        for container in containers
        for widget in container
        if (labelled := widget._labeled_widget()) is not None
    ]
    for label in labels:
        label.ensurePolished()
    width = max((label.sizeHint().width() for label in labels), default=0)
    for label in labels:
        label.setMinimumWidth(width)
