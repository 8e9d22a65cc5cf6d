"""The Train widget's settings form: magicgui containers for the basic settings and a collapsible
"Advanced" section.

It only translates between widgets and a :class:`TrainingConfig` (``config()`` / ``set_config()``);
the "Download ImageNet weights" button beside "Pretrained" lives in ``_weights_download``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label, LineEdit
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QVBoxLayout, QWidget

from .. import TrainingConfig
from ..models import (
    architecture_spec,
    available_architectures,
    pretrained_weights_status,
)
from ._form import align_labels, choice_combo, int_spin, scientific_spin, select
from ._train_advanced import AdvancedSettings
from ._train_job import parse_class_names
from ._weights_download import WeightsDownload

ITERATIONS, MINUTES, UNTIL_STOPPED = "iterations", "minutes", "until stopped"
STOP_AFTER = {ITERATIONS: "iterations", MINUTES: "minutes", UNTIL_STOPPED: "until I stop"}


class TrainControls(QWidget):
    """Training settings: architecture, basic numbers, class names and an "Advanced" section.

    ``config()`` builds a :class:`TrainingConfig`; ``set_config(config)`` fills the form from one.
    The children are magicgui widgets (set ``.value``); ``basic`` and ``advanced_form`` hold them.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pretrained_wanted = True
        self._base = TrainingConfig()
        names = {n: architecture_spec(n).display_name for n in available_architectures()}
        self.architecture_combo = choice_combo(names, "Architecture", "Network architecture")
        self.hint_label = Label(label=" ")
        self.hint_label.native.setWordWrap(True)
        self.encoder_combo = choice_combo({}, "Encoder", "Backbone network that extracts the features")
        self.pretrained_checkbox = CheckBox(text="Pretrained (ImageNet)")
        self.weights_download = WeightsDownload(self._on_weights_downloaded, parent=self)
        pretrained_row = Container(
            widgets=[self.pretrained_checkbox, self.weights_download.button],
            layout="horizontal",
            labels=False,
            label=" ",
        )
        pretrained_row.margins = (0, 0, 0, 0)
        self.iterations_spin = int_spin("", 1, 1_000_000, 50, "Optimizer steps of this run")
        self.minutes_spin = FloatSpinBox(
            value=5.0, min=0.05, max=100_000.0, step=1.0, tooltip="Minutes of training in this run"
        )
        self.stop_combo = choice_combo(
            STOP_AFTER, "", "What ends the run (Stop ends any run, keeping the model)"
        )
        stop_row = Container(
            widgets=[self.iterations_spin, self.minutes_spin, self.stop_combo],
            layout="horizontal",
            labels=False,
            label="Stop after",
        )
        stop_row.margins = (0, 0, 0, 0)
        self.learning_rate_spin = scientific_spin(
            0.0, 1.0, "Learning rate", "Peak learning rate; 'default' uses the architecture's"
        )
        self.batch_size_spin = int_spin("Batch size", 1, 512, 1, "Patches per optimizer step")
        self.patch_size_spin = int_spin(
            "Patch size", 32, 4096, 32, "Side of the square training patches, in pixels"
        )
        self.class_names_edit = LineEdit(
            label="Class names",
            tooltip=(
                "Names of classes 1, 2, ... separated by commas, e.g. 'background, nucleus'; "
                "empty: the labels layer's names, else 'class 1', 'class 2', ..."
            ),
        )
        self.class_names_edit.native.setPlaceholderText("class 1, class 2, …")
        self.basic = Container(
            widgets=[
                self.architecture_combo,
                self.hint_label,
                self.encoder_combo,
                pretrained_row,
                self.weights_download.progress_bar,
                stop_row,
                self.learning_rate_spin,
                self.batch_size_spin,
                self.patch_size_spin,
                self.class_names_edit,
            ]
        )
        self.basic.margins = (0, 0, 0, 0)

        self.advanced_settings = AdvancedSettings()
        self.advanced_form = self.advanced_settings.form
        self.advanced = self.advanced_settings.collapsible
        self.preview_checkbox = CheckBox(
            text="Live preview of the current slice",
            value=True,
            tooltip="Predict the shown slice of the first image every few iterations",
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.basic.native)
        layout.addWidget(self.advanced)
        layout.addWidget(self.preview_checkbox.native)  # stays usable while training

        self.architecture_combo.changed.connect(self._on_architecture_changed)
        self.encoder_combo.changed.connect(self._refresh_pretrained)
        self.pretrained_checkbox.changed.connect(self._on_pretrained_toggled)
        self.stop_combo.changed.connect(self._refresh_stop)
        self._on_architecture_changed()
        self.set_config(TrainingConfig())

    def event(self, event: QEvent) -> bool:
        handled = super().event(event)
        if event.type() in (QEvent.Show, QEvent.FontChange, QEvent.StyleChange):  # napari's style sheet
            align_labels(self.basic, self.advanced_form)  # sets the label widths
        return handled

    # ------------------------------------------------------------------ config
    def config(self) -> TrainingConfig:
        """The settings as a :class:`TrainingConfig`."""
        mode = self.stop_combo.value
        return self._base.replace(  # the fields the form does not show keep their values
            architecture=self.architecture_combo.value,
            encoder=self.encoder_combo.value,
            pretrained=self.pretrained_checkbox.enabled and self.pretrained_checkbox.value,
            iterations=self.iterations_spin.value if mode == ITERATIONS else None,
            max_minutes=self.minutes_spin.value if mode == MINUTES else None,
            batch_size=self.batch_size_spin.value,
            patch_size=self.patch_size_spin.value,
            learning_rate=self.learning_rate_spin.value or None,
            **self.advanced_settings.config_fields(),
        )

    def set_config(self, config: TrainingConfig) -> None:
        """Fill every control from ``config``."""
        select(self.architecture_combo, config.architecture)  # refills the encoders
        spec = architecture_spec(config.architecture)
        select(self.encoder_combo, config.encoder or spec.default_encoder)
        self._pretrained_wanted = config.pretrained
        self._refresh_pretrained()
        # Both limits set (the API allows it): the form shows the time budget.
        select(
            self.stop_combo,
            MINUTES if config.max_minutes else ITERATIONS if config.iterations else UNTIL_STOPPED,
        )
        if config.iterations:
            self.iterations_spin.value = config.iterations
        if config.max_minutes:
            self.minutes_spin.value = config.max_minutes
        values = [
            (self.learning_rate_spin, config.learning_rate or 0.0),
            (self.batch_size_spin, config.batch_size),
            (self.patch_size_spin, config.patch_size),
        ]
        for widget, value in values:
            widget.value = value
        self.advanced_settings.set_config(config)
        self._refresh_stop()
        self._base = config

    def set_options(self, config: TrainingConfig | None = None, **changes: Any) -> None:
        """Fill the form from ``config`` (default: the form itself) with single fields changed.

        Besides the :class:`TrainingConfig` fields: ``preview`` (bool), ``preview_interval``,
        ``preview_tile_size``, ``channel_axis`` (``None`` for automatic), ``class_names`` (a
        sequence, ``None`` to clear) and ``tensorboard`` (a folder, ``None`` for no logging).
        Changing the architecture without naming an encoder selects the architecture's default encoder.
        """
        widgets = {
            "preview": self.preview_checkbox,
            "preview_interval": self.advanced_settings.preview_interval_spin,
            "preview_tile_size": self.advanced_settings.preview_tile_spin,
        }
        for key in widgets.keys() & changes.keys():
            widgets[key].value = changes.pop(key)
        if "channel_axis" in changes:
            self.advanced_settings.channel_axis = changes.pop("channel_axis")
        if "tensorboard" in changes:
            self.advanced_settings.tensorboard = changes.pop("tensorboard")
        if "class_names" in changes:
            self.class_names_edit.value = ", ".join(changes.pop("class_names") or ())
        if "iterations" in changes and "max_minutes" not in changes:  # one limit named: that one ends it
            changes["max_minutes"] = None
        elif "max_minutes" in changes and "iterations" not in changes:
            changes["iterations"] = None
        if "architecture" in changes and "encoder" not in changes:
            changes["encoder"] = None
        self.set_config((config or self.config()).replace(**changes))

    @property
    def preview_interval(self) -> int:
        return self.advanced_settings.preview_interval_spin.value

    @property
    def preview_tile_size(self) -> int:
        return self.advanced_settings.preview_tile_spin.value

    @property
    def channel_axis(self) -> int | None:
        """The chosen channel axis of the images, ``None`` for automatic."""
        return self.advanced_settings.channel_axis

    @property
    def tensorboard(self) -> Path | None:
        """The folder each run is logged into for TensorBoard (a new subfolder per run), or ``None``."""
        return self.advanced_settings.tensorboard

    @property
    def class_names(self) -> list[str] | None:
        """The names typed for classes 1, 2, ...; ``None`` when the field is empty."""
        return parse_class_names(self.class_names_edit.value)

    def set_enabled(self, enabled: bool) -> None:
        """Lock (while training) or unlock the settings; "Advanced" can still be opened to read them."""
        self.basic.enabled = enabled
        self.advanced_form.enabled = enabled

    # ---------------------------------------------------------------- handlers
    def _on_architecture_changed(self) -> None:
        spec = architecture_spec(self.architecture_combo.value)
        self.hint_label.value = spec.hint
        spin = self.learning_rate_spin.native
        spin.setSpecialValueText(f"default ({spec.default_learning_rate:g})")
        spin.start_value = spec.default_learning_rate
        with self.encoder_combo.changed.blocked():
            self.encoder_combo.choices = []
            self.encoder_combo.choices = [
                (encoder + (" (default)" if encoder == spec.default_encoder else ""), encoder)
                for encoder in spec.encoders
            ]
        self._refresh_pretrained()

    def _refresh_pretrained(self) -> None:
        encoder = self.encoder_combo.value
        status = pretrained_weights_status(encoder) if encoder else None  # one look into the hub cache
        available = status is not None and status.available
        self.weights_download.set_encoder(encoder, available)
        box = self.pretrained_checkbox
        with box.changed.blocked():
            box.enabled = available
            box.value = available and self._pretrained_wanted
        if status is None:
            box.tooltip = ""
        elif available:
            box.tooltip = "Start the encoder from ImageNet weights (recommended)"
        else:
            box.tooltip = (
                f"No pretrained weights for {encoder} offline: press 'Download ImageNet weights', or "
                f"{status.instructions}. Until then: random weights."
            )

    def _on_weights_downloaded(self, encoder: str | None) -> None:
        if encoder is not None:  # asked for: use them
            self._pretrained_wanted = True
        self._refresh_pretrained()

    def _on_pretrained_toggled(self, checked: bool) -> None:
        self._pretrained_wanted = checked

    def _refresh_stop(self) -> None:
        mode = self.stop_combo.value
        self.iterations_spin.visible = mode == ITERATIONS
        self.minutes_spin.visible = mode == MINUTES
