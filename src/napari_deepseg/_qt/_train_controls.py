"""The Train widget's settings form: basic settings plus a collapsible "Advanced" section.

It only translates between widgets and a :class:`TrainingConfig` (``config()`` / ``set_config()``).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QCheckBox, QFormLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from .. import AugmentationConfig, TrainingConfig
from ..config import Loss, Optimizer, Precision, Schedule
from ..models import architecture_spec, available_architectures, pretrained_weights_available
from ._form import ScientificSpinBox, float_spin, int_spin, select_value, value_combo

OPTIMIZERS = {Optimizer.ADAM: "Adam", Optimizer.ADAMW: "AdamW", Optimizer.SGD: "SGD (Nesterov momentum)"}
SCHEDULES = {Schedule.COSINE: "Cosine decay", Schedule.STEP: "Step (x0.1 after 2/3)",
             Schedule.CONSTANT: "Constant"}
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


def _devices() -> dict[str, str]:
    import torch

    devices = {"auto": "auto (GPU if available)", "cpu": "cpu"}
    for i in range(torch.cuda.device_count()):
        devices[f"cuda:{i}"] = f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices["mps"] = "mps"
    return devices


def _weights_hint(encoder: str) -> str:
    try:  # public module function, not re-exported by napari_deepseg.models
        from ..models.encoders import weights_cache_paths

        path = weights_cache_paths(encoder)[0]
        where = f"put {path.name} in {path.parent}"
    except Exception:  # pragma: no cover - only a hint
        where = "put torchvision's ImageNet file in $TORCH_HOME/hub/checkpoints"
    return f"No pretrained weights for {encoder} offline; {where}. Training starts from random weights."


class TrainControls(QWidget):
    """Training settings: architecture, basic numbers and an "Advanced" section.

    ``config()`` builds a :class:`TrainingConfig`; ``set_config(config)`` fills the form from one.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pretrained_wanted = True
        self._base = TrainingConfig()
        names = {n: architecture_spec(n).display_name for n in available_architectures()}
        self.architecture_combo = value_combo(names, "Network architecture")
        self.hint_label = QLabel()
        self.hint_label.setWordWrap(True)
        self.encoder_combo = value_combo({}, "Backbone network that extracts the features")
        self.pretrained_checkbox = QCheckBox("Pretrained (ImageNet)")
        self.stop_combo = value_combo(STOP_AFTER, "What ends the run (Stop ends any run, keeping the model)")
        self.iterations_spin = int_spin(1, 1_000_000, 50, "Optimizer steps of this run")
        self.minutes_spin = float_spin(100_000.0, 1.0, "Minutes of training in this run")
        self.minutes_spin.setMinimum(0.05)
        self.minutes_spin.setValue(5.0)
        self.learning_rate_spin = ScientificSpinBox(0.0, 1.0, 1e-3)
        self.learning_rate_spin.setToolTip("Peak learning rate; 'default' uses the architecture's")
        self.batch_size_spin = int_spin(1, 512, 1, "Patches per optimizer step")
        self.patch_size_spin = int_spin(32, 4096, 32, "Side of the square training patches, in pixels")

        self._basic = QWidget()
        form = QFormLayout(self._basic)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Architecture", self.architecture_combo)
        form.addRow(self.hint_label)
        form.addRow("Encoder", self.encoder_combo)
        form.addRow("", self.pretrained_checkbox)
        stop_row = QWidget()
        row = QHBoxLayout(stop_row)
        row.setContentsMargins(0, 0, 0, 0)
        for widget in (self.iterations_spin, self.minutes_spin, self.stop_combo):
            row.addWidget(widget)
        form.addRow("Stop after", stop_row)
        form.addRow("Learning rate", self.learning_rate_spin)
        form.addRow("Batch size", self.batch_size_spin)
        form.addRow("Patch size", self.patch_size_spin)

        self._build_advanced()
        self.preview_checkbox = QCheckBox("Live preview of the current slice")
        self.preview_checkbox.setChecked(True)
        self.preview_checkbox.setToolTip("Predict the shown slice of the first image every few iterations")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._basic)
        layout.addWidget(self.advanced)
        layout.addWidget(self.preview_checkbox)  # stays usable while training

        self.architecture_combo.currentIndexChanged.connect(self._on_architecture_changed)
        self.encoder_combo.currentIndexChanged.connect(self._refresh_pretrained)
        self.pretrained_checkbox.toggled.connect(self._on_pretrained_toggled)
        self.loss_combo.currentIndexChanged.connect(self._refresh_dice)
        self.stop_combo.currentIndexChanged.connect(self._refresh_stop)
        self._on_architecture_changed()
        self.set_config(TrainingConfig())

    def _build_advanced(self) -> None:
        self.optimizer_combo = value_combo(OPTIMIZERS)
        self.weight_decay_spin = ScientificSpinBox(0.0, 1.0, 1e-4)
        self.schedule_combo = value_combo(SCHEDULES, "Learning-rate schedule (after a short warm-up)")
        self.loss_combo = value_combo(LOSSES)
        self.dice_weight_spin = float_spin(10.0, 0.1, "Weight of the soft Dice term")
        self.class_balancing_checkbox = QCheckBox("Balance classes")
        self.class_balancing_checkbox.setToolTip("Weight classes by the inverse frequency of their strokes")
        self.labelled_fraction_spin = float_spin(1.0, 0.05, "Share of patches centred on a painted pixel")
        self.validation_fraction_spin = float_spin(0.9, 0.05, "Painted pixels held out to validate")
        self.validation_interval_spin = int_spin(1, 1_000_000, 10, "Iterations between validations")
        self.seed_spin = int_spin(0, 2**31 - 1, 1, "Same seed + same CPU = same run")
        self.device_combo = value_combo(_devices())
        self.precision_combo = value_combo(PRECISIONS, "auto: bf16/fp16 where the hardware is fast at it")
        self.flips_checkbox = QCheckBox("Flips")
        self.rot90_checkbox = QCheckBox("90° rotations")
        self.augmentation_spins = {name: float_spin(maximum, step, tip)
                                   for name, _, maximum, step, tip in AUGMENTATIONS}
        self.preview_interval_spin = int_spin(1, 100_000, 5, "Iterations between live previews")
        self.preview_tile_spin = int_spin(64, 4096, 64, "Tile side of the preview prediction")
        self.channel_axis_combo = value_combo({"auto": "auto", **{str(i): str(i) for i in range(5)}},
                                         "Channel axis of multichannel (non-RGB) images")

        content = QWidget()
        form = QFormLayout(content)
        form.setContentsMargins(0, 0, 0, 0)
        rows: list[tuple[str, QWidget]] = [
            ("Optimizer", self.optimizer_combo), ("Weight decay", self.weight_decay_spin),
            ("Schedule", self.schedule_combo), ("Loss", self.loss_combo),
            ("Dice weight", self.dice_weight_spin),
            ("", self.class_balancing_checkbox), ("Labelled patches", self.labelled_fraction_spin),
            ("Validation share", self.validation_fraction_spin),
            ("Validate every", self.validation_interval_spin), ("Seed", self.seed_spin),
            ("Device", self.device_combo), ("Precision", self.precision_combo),
            ("Augmentation", self.flips_checkbox), ("", self.rot90_checkbox),
            *((label, self.augmentation_spins[name]) for name, label, *_ in AUGMENTATIONS),
            ("Preview every", self.preview_interval_spin), ("Preview tile", self.preview_tile_spin),
            ("Channel axis", self.channel_axis_combo),
        ]
        for label, widget in rows:
            form.addRow(label, widget)
        self._advanced_content = content
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(content)
        self.preview_interval_spin.setValue(25)
        self.preview_tile_spin.setValue(512)

    # ------------------------------------------------------------------ config
    def config(self) -> TrainingConfig:
        """The settings as a :class:`TrainingConfig`."""
        augmentation = AugmentationConfig(
            flips=self.flips_checkbox.isChecked(), rot90=self.rot90_checkbox.isChecked(),
            **{name: spin.value() for name, spin in self.augmentation_spins.items()})
        learning_rate, mode = self.learning_rate_spin.value(), self.stop_combo.currentData()
        return self._base.replace(  # the fields the form does not show keep their values
            architecture=self.architecture_combo.currentData(), encoder=self.encoder_combo.currentData(),
            pretrained=self.pretrained_checkbox.isEnabled() and self.pretrained_checkbox.isChecked(),
            iterations=self.iterations_spin.value() if mode == ITERATIONS else None,
            max_minutes=self.minutes_spin.value() if mode == MINUTES else None,
            batch_size=self.batch_size_spin.value(),
            patch_size=self.patch_size_spin.value(), learning_rate=learning_rate or None,
            optimizer=self.optimizer_combo.currentData(), weight_decay=self.weight_decay_spin.value(),
            schedule=self.schedule_combo.currentData(), loss=self.loss_combo.currentData(),
            dice_weight=self.dice_weight_spin.value(),
            class_balancing=self.class_balancing_checkbox.isChecked(),
            labelled_patch_fraction=self.labelled_fraction_spin.value(),
            validation_fraction=self.validation_fraction_spin.value(),
            validation_interval=self.validation_interval_spin.value(), seed=self.seed_spin.value(),
            device=self.device_combo.currentData(), precision=self.precision_combo.currentData(),
            augmentation=augmentation)

    def set_config(self, config: TrainingConfig) -> None:
        """Fill every control from ``config``."""
        select_value(self.architecture_combo, config.architecture)  # refills the encoders
        spec = architecture_spec(config.architecture)
        select_value(self.encoder_combo, config.encoder or spec.default_encoder)
        self._pretrained_wanted = config.pretrained
        self._refresh_pretrained()
        # Both limits set (the API allows it): the form shows the time budget.
        mode = MINUTES if config.max_minutes else ITERATIONS if config.iterations else UNTIL_STOPPED
        select_value(self.stop_combo, mode)
        if config.iterations:
            self.iterations_spin.setValue(config.iterations)
        if config.max_minutes:
            self.minutes_spin.setValue(config.max_minutes)
        self.learning_rate_spin.setValue(config.learning_rate or 0.0)
        self.batch_size_spin.setValue(config.batch_size)
        self.patch_size_spin.setValue(config.patch_size)
        for combo, value in ((self.optimizer_combo, config.optimizer), (self.schedule_combo, config.schedule),
                             (self.loss_combo, config.loss), (self.device_combo, config.device),
                             (self.precision_combo, config.precision)):
            select_value(combo, value)
        self.weight_decay_spin.setValue(config.weight_decay)
        self.dice_weight_spin.setValue(config.dice_weight)
        self.class_balancing_checkbox.setChecked(config.class_balancing)
        self.labelled_fraction_spin.setValue(config.labelled_patch_fraction)
        self.validation_fraction_spin.setValue(config.validation_fraction)
        self.validation_interval_spin.setValue(config.validation_interval)
        self.seed_spin.setValue(config.seed)
        self.flips_checkbox.setChecked(bool(config.augmentation.flips))
        self.rot90_checkbox.setChecked(bool(config.augmentation.rot90))
        for name, spin in self.augmentation_spins.items():
            spin.setValue(float(getattr(config.augmentation, name)))
        self._refresh_dice()
        self._refresh_stop()
        self._base = config

    def set_options(self, config: TrainingConfig | None = None, **changes: Any) -> None:
        """Fill the form from ``config`` (default: the form itself) with single fields changed.

        Besides the :class:`TrainingConfig` fields: ``preview`` (bool), ``preview_interval``,
        ``preview_tile_size`` and ``channel_axis`` (``None`` for automatic). Changing the
        architecture without naming an encoder selects the architecture's default encoder.
        """
        if "preview" in changes:
            self.preview_checkbox.setChecked(bool(changes.pop("preview")))
        if "preview_interval" in changes:
            self.preview_interval_spin.setValue(int(changes.pop("preview_interval")))
        if "preview_tile_size" in changes:
            self.preview_tile_spin.setValue(int(changes.pop("preview_tile_size")))
        if "channel_axis" in changes:
            axis = changes.pop("channel_axis")
            self.channel_axis_combo.setCurrentIndex(0 if axis is None else int(axis) + 1)
        if "iterations" in changes and "max_minutes" not in changes:  # one limit named: that one ends it
            changes["max_minutes"] = None
        elif "max_minutes" in changes and "iterations" not in changes:
            changes["iterations"] = None
        if "architecture" in changes and "encoder" not in changes:
            changes["encoder"] = None
        self.set_config((config or self.config()).replace(**changes))

    @property
    def preview_interval(self) -> int:
        return self.preview_interval_spin.value()

    @property
    def preview_tile_size(self) -> int:
        return self.preview_tile_spin.value()

    @property
    def channel_axis(self) -> int | None:
        """The chosen channel axis of the images, ``None`` for automatic."""
        value = self.channel_axis_combo.currentData()
        return None if value == "auto" else int(value)

    def set_enabled(self, enabled: bool) -> None:
        """Lock (while training) or unlock the settings; "Advanced" can still be opened to read them."""
        self._basic.setEnabled(enabled)
        self._advanced_content.setEnabled(enabled)

    # ---------------------------------------------------------------- handlers
    def _on_architecture_changed(self) -> None:
        spec = architecture_spec(self.architecture_combo.currentData())
        self.hint_label.setText(spec.hint)
        self.learning_rate_spin.setSpecialValueText(f"default ({spec.default_learning_rate:g})")
        self.learning_rate_spin.start_value = spec.default_learning_rate
        self.encoder_combo.blockSignals(True)
        self.encoder_combo.clear()
        for encoder in spec.encoders:
            suffix = " (default)" if encoder == spec.default_encoder else ""
            self.encoder_combo.addItem(encoder + suffix, encoder)
        self.encoder_combo.blockSignals(False)
        self._refresh_pretrained()

    def _refresh_pretrained(self) -> None:
        encoder = self.encoder_combo.currentData()
        available = bool(encoder) and pretrained_weights_available(encoder)
        box = self.pretrained_checkbox
        box.blockSignals(True)
        box.setEnabled(available)
        box.setChecked(available and self._pretrained_wanted)
        box.blockSignals(False)
        box.setToolTip("Start the encoder from ImageNet weights (recommended)" if available
                       else _weights_hint(encoder) if encoder else "")

    def _on_pretrained_toggled(self, checked: bool) -> None:
        self._pretrained_wanted = checked

    def _refresh_stop(self) -> None:
        mode = self.stop_combo.currentData()
        self.iterations_spin.setVisible(mode == ITERATIONS)
        self.minutes_spin.setVisible(mode == MINUTES)

    def _refresh_dice(self) -> None:
        self.dice_weight_spin.setEnabled(self.loss_combo.currentData() == Loss.CROSS_ENTROPY_DICE.value)
