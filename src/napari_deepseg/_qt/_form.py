"""Small form building blocks: typed spin boxes and combo boxes whose items carry values."""

from __future__ import annotations

from typing import Any

from qtpy.QtGui import QValidator
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QSpinBox, QWidget


class ScientificSpinBox(QDoubleSpinBox):
    """A spin box for rates such as 1e-3: shown in %g notation, stepped along 1-2-5 per decade."""

    def __init__(self, minimum: float, maximum: float, start: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.start_value = start  # where "+" goes from the minimum (e.g. from "default")
        self.setDecimals(10)
        self.setRange(minimum, maximum)

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


def int_spin(minimum: int, maximum: int, step: int = 1, tooltip: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(minimum, maximum)
    spin.setSingleStep(step)
    spin.setToolTip(tooltip)
    return spin


def float_spin(maximum: float, step: float, tooltip: str = "", decimals: int = 2) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.0, maximum)
    spin.setDecimals(decimals)
    spin.setSingleStep(step)
    spin.setToolTip(tooltip)
    return spin


def value_combo(items: dict[Any, str], tooltip: str = "") -> QComboBox:
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)
    for value, text in items.items():
        combo.addItem(text, getattr(value, "value", value))
    combo.setToolTip(tooltip)
    return combo


def select_value(combo: QComboBox, value: Any) -> None:
    value = getattr(value, "value", value)
    index = combo.findData(value)
    if index < 0:  # e.g. a device named in a loaded model, not present here
        combo.addItem(str(value), value)
        index = combo.count() - 1
    combo.setCurrentIndex(index)
