"""The Train widget's settings form: magicgui containers for the basic settings and a collapsible
"Advanced" section.

It only translates between widgets and a :class:`TrainingConfig` (``config()`` / ``set_config()``).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label, LineEdit
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QVBoxLayout, QWidget
from superqt import QCollapsible

from .. import AugmentationConfig, TrainingConfig
from .._device import available_devices
from ..config import Loss, Optimizer, Precision, Schedule
from ..models import (
    architecture_spec,
    available_architectures,
    pretrained_weights_available,
    pretrained_weights_status,
)
from ._form import align_labels, choice_combo, float_spin, flush, indented, int_spin, scientific_spin, select
from ._train_job import parse_class_names

OPTIMIZERS = {Optimizer.ADAM: "Adam", Optimizer.ADAMW: "AdamW", Optimizer.SGD: "SGD (Nesterov momentum)"}
SCHEDULES = {
    Schedule.COSINE: "Cosine decay",
    Schedule.STEP: "Step (x0.1 after 2/3)",
    Schedule.CONSTANT: "Constant",
}
LOSSES = {Loss.CROSS_ENTROPY: "Cross-entropy", Loss.CROSS_ENTROPY_DICE: "Cross-entropy + Dice"}
PRECISIONS = {Precision.AUTO: "auto", Precision.FP32: "fp32", Precision.BF16: "bf16"}
ITERATIONS, MINUTES, UNTIL_STOPPED = "iterations", "minutes", "until stopped"
STOP_AFTER = {ITERATIONS: "iterations", MINUTES: "minutes", UNTIL_STOPPED: "until I stop"}
# (field, label, maximum, step, tooltip) of the augmentation strengths; 0 turns one off.
AUGMENTATIONS = (
    ("rotation_degrees", "Rotation (°)", 180.0, 5.0, "Random rotation up to this angle"),
    ("scale", "Scale", 0.9, 0.05, "Zoom drawn from [1 - s, 1 + s]"),
    ("brightness", "Brightness", 1.0, 0.05, "Additive shift of the normalised intensity"),
    ("contrast", "Contrast", 1.0, 0.05, "Factor drawn from [1 - c, 1 + c]"),
    ("hue", "Hue (RGB)", 0.5, 0.01, "Hue jitter, RGB images only"),
    ("saturation", "Saturation (RGB)", 1.0, 0.05, "Saturation jitter, RGB images only"),
    ("noise_std", "Noise", 1.0, 0.01, "Gaussian noise of the normalised intensity"),
)


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
                indented(self.pretrained_checkbox),
                stop_row,
                self.learning_rate_spin,
                self.batch_size_spin,
                self.patch_size_spin,
                self.class_names_edit,
            ]
        )
        self.basic.margins = (0, 0, 0, 0)

        self._build_advanced()
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
        self.loss_combo.changed.connect(self._refresh_dice)
        self.stop_combo.changed.connect(self._refresh_stop)
        self._on_architecture_changed()
        self.set_config(TrainingConfig())

    def _build_advanced(self) -> None:
        self.optimizer_combo = choice_combo(OPTIMIZERS, "Optimizer")
        self.weight_decay_spin = scientific_spin(0.0, 1.0, "Weight decay", "")
        self.weight_decay_spin.native.start_value = 1e-4
        self.schedule_combo = choice_combo(
            SCHEDULES, "Schedule", "Learning-rate schedule (after a short warm-up)"
        )
        self.loss_combo = choice_combo(LOSSES, "Loss")
        self.dice_weight_spin = float_spin("Dice weight", 10.0, 0.1, "Weight of the soft Dice term")
        self.class_balancing_checkbox = CheckBox(
            text="Balance classes", tooltip="Weight classes by the inverse frequency of their strokes"
        )
        self.labelled_fraction_spin = float_spin(
            "Labelled patches", 1.0, 0.05, "Share of patches centred on a painted pixel"
        )
        self.validation_fraction_spin = float_spin(
            "Validation share", 0.9, 0.05, "Painted pixels held out to validate"
        )
        self.validation_interval_spin = int_spin(
            "Validate every", 1, 1_000_000, 10, "Iterations between validations"
        )
        self.seed_spin = int_spin("Seed", 0, 2**31 - 1, 1, "Same seed + same CPU = same run")
        self.device_combo = choice_combo(available_devices(), "Device")
        self.precision_combo = choice_combo(
            PRECISIONS, "Precision", "auto: bf16/fp16 where the hardware is fast at it"
        )
        self.flips_checkbox = CheckBox(text="Flips")
        self.rot90_checkbox = CheckBox(text="90° rotations")
        self.augmentation_spins = {
            name: float_spin(label, maximum, step, tip) for name, label, maximum, step, tip in AUGMENTATIONS
        }
        self.preview_interval_spin = int_spin(
            "Preview every", 1, 100_000, 5, "Iterations between live previews"
        )
        self.preview_tile_spin = int_spin("Preview tile", 64, 4096, 64, "Tile side of the preview prediction")
        axes = {"auto": "auto", **{str(i): str(i) for i in range(5)}}
        self.channel_axis_combo = choice_combo(
            axes, "Channel axis", "Channel axis of multichannel (non-RGB) images"
        )
        self.advanced_form = Container(
            widgets=[
                self.optimizer_combo,
                self.weight_decay_spin,
                self.schedule_combo,
                self.loss_combo,
                self.dice_weight_spin,
                indented(self.class_balancing_checkbox),
                self.labelled_fraction_spin,
                self.validation_fraction_spin,
                self.validation_interval_spin,
                self.seed_spin,
                self.device_combo,
                self.precision_combo,
                indented(self.flips_checkbox),
                indented(self.rot90_checkbox),
                *self.augmentation_spins.values(),
                self.preview_interval_spin,
                self.preview_tile_spin,
                self.channel_axis_combo,
            ]
        )
        self.advanced_form.margins = (0, 0, 0, 0)
        self.advanced = flush(QCollapsible("Advanced"))  # its fields in the column of the basic ones
        self.advanced.addWidget(self.advanced_form.native)
        self.preview_interval_spin.value = 25
        self.preview_tile_spin.value = 512

    def event(self, event: QEvent) -> bool:
        handled = super().event(event)
        if event.type() in (QEvent.Show, QEvent.FontChange, QEvent.StyleChange):  # napari's style sheet
            align_labels(self.basic, self.advanced_form)  # sets the label widths
        return handled

    # ------------------------------------------------------------------ config
    def config(self) -> TrainingConfig:
        """The settings as a :class:`TrainingConfig`."""
        augmentation = AugmentationConfig(
            flips=self.flips_checkbox.value,
            rot90=self.rot90_checkbox.value,
            **{name: spin.value for name, spin in self.augmentation_spins.items()},
        )
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
            optimizer=self.optimizer_combo.value,
            weight_decay=self.weight_decay_spin.value,
            schedule=self.schedule_combo.value,
            loss=self.loss_combo.value,
            dice_weight=self.dice_weight_spin.value,
            class_balancing=self.class_balancing_checkbox.value,
            labelled_patch_fraction=self.labelled_fraction_spin.value,
            validation_fraction=self.validation_fraction_spin.value,
            validation_interval=self.validation_interval_spin.value,
            seed=self.seed_spin.value,
            device=self.device_combo.value,
            precision=self.precision_combo.value,
            augmentation=augmentation,
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
        for combo, choice in (
            (self.optimizer_combo, config.optimizer),
            (self.schedule_combo, config.schedule),
            (self.loss_combo, config.loss),
            (self.device_combo, config.device),
            (self.precision_combo, config.precision),
        ):
            select(combo, choice)
        values = [
            (self.learning_rate_spin, config.learning_rate or 0.0),
            (self.batch_size_spin, config.batch_size),
            (self.patch_size_spin, config.patch_size),
            (self.weight_decay_spin, config.weight_decay),
            (self.dice_weight_spin, config.dice_weight),
            (self.class_balancing_checkbox, config.class_balancing),
            (self.labelled_fraction_spin, config.labelled_patch_fraction),
            (self.validation_fraction_spin, config.validation_fraction),
            (self.validation_interval_spin, config.validation_interval),
            (self.seed_spin, config.seed),
            (self.flips_checkbox, bool(config.augmentation.flips)),
            (self.rot90_checkbox, bool(config.augmentation.rot90)),
            *(
                (spin, float(getattr(config.augmentation, name)))
                for name, spin in self.augmentation_spins.items()
            ),
        ]
        for widget, value in values:
            widget.value = value
        self._refresh_dice()
        self._refresh_stop()
        self._base = config

    def set_options(self, config: TrainingConfig | None = None, **changes: Any) -> None:
        """Fill the form from ``config`` (default: the form itself) with single fields changed.

        Besides the :class:`TrainingConfig` fields: ``preview`` (bool), ``preview_interval``,
        ``preview_tile_size``, ``channel_axis`` (``None`` for automatic) and ``class_names`` (a
        sequence, ``None`` to clear). Changing the architecture without naming an encoder selects
        the architecture's default encoder.
        """
        widgets = {
            "preview": self.preview_checkbox,
            "preview_interval": self.preview_interval_spin,
            "preview_tile_size": self.preview_tile_spin,
        }
        for key in widgets.keys() & changes.keys():
            widgets[key].value = changes.pop(key)
        if "channel_axis" in changes:
            axis = changes.pop("channel_axis")
            select(self.channel_axis_combo, "auto" if axis is None else str(int(axis)))
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
        return self.preview_interval_spin.value

    @property
    def preview_tile_size(self) -> int:
        return self.preview_tile_spin.value

    @property
    def channel_axis(self) -> int | None:
        """The chosen channel axis of the images, ``None`` for automatic."""
        value = self.channel_axis_combo.value
        return None if value == "auto" else int(value)

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
        available = bool(encoder) and pretrained_weights_available(encoder)
        box = self.pretrained_checkbox
        with box.changed.blocked():
            box.enabled = available
            box.value = available and self._pretrained_wanted
        if available or not encoder:
            box.tooltip = "Start the encoder from ImageNet weights (recommended)" if available else ""
        else:
            how = pretrained_weights_status(encoder).instructions
            box.tooltip = f"No pretrained weights for {encoder} offline: {how}. Until then: random weights."

    def _on_pretrained_toggled(self, checked: bool) -> None:
        self._pretrained_wanted = checked

    def _refresh_stop(self) -> None:
        mode = self.stop_combo.value
        self.iterations_spin.visible = mode == ITERATIONS
        self.minutes_spin.visible = mode == MINUTES

    def _refresh_dice(self) -> None:
        self.dice_weight_spin.enabled = self.loss_combo.value == Loss.CROSS_ENTROPY_DICE.value
