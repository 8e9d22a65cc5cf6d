"""The "Advanced" section of the Train form: optimiser, loss, validation, device, augmentation,
preview and TensorBoard settings, as magicgui widgets in a collapsible.

It translates between its widgets and the :class:`TrainingConfig` fields it shows
(``config_fields()`` / ``set_config()``); :class:`~._train_controls.TrainControls` puts it under the
basic settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, Container, FileEdit
from superqt import QCollapsible

from .. import AugmentationConfig, TrainingConfig
from .._device import available_devices
from ..config import Loss, Optimizer, Precision, Schedule
from ._form import choice_combo, float_spin, flush, indented, int_spin, scientific_spin, select

OPTIMIZERS = {Optimizer.ADAM: "Adam", Optimizer.ADAMW: "AdamW", Optimizer.SGD: "SGD (Nesterov momentum)"}
SCHEDULES = {
    Schedule.COSINE: "Cosine decay",
    Schedule.STEP: "Step (x0.1 after 2/3)",
    Schedule.CONSTANT: "Constant",
}
LOSSES = {Loss.CROSS_ENTROPY: "Cross-entropy", Loss.CROSS_ENTROPY_DICE: "Cross-entropy + Dice"}
PRECISIONS = {Precision.AUTO: "auto", Precision.FP32: "fp32", Precision.BF16: "bf16"}
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


class AdvancedSettings:
    """The advanced settings; ``form`` is the magicgui container, ``collapsible`` the section holding it."""

    def __init__(self) -> None:
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
        self.tensorboard_edit = FileEdit(
            mode="d",
            nullable=True,
            label="TensorBoard folder",
            tooltip="Log each run (scalars, validation per class, preview images) into a new subfolder "
            "here; open it with `tensorboard --logdir FOLDER`. Empty: no logging",
        )
        self.tensorboard_edit.line_edit.native.setPlaceholderText("off")
        self.form = Container(
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
                self.tensorboard_edit,
            ]
        )
        self.form.margins = (0, 0, 0, 0)
        self.collapsible = flush(QCollapsible("Advanced"))  # its fields in the column of the basic ones
        self.collapsible.addWidget(self.form.native)
        self.preview_interval_spin.value = 25
        self.preview_tile_spin.value = 512
        self.loss_combo.changed.connect(self._refresh_dice)

    def config_fields(self) -> dict[str, Any]:
        """The :class:`TrainingConfig` fields this section shows, as keyword arguments."""
        augmentation = AugmentationConfig(
            flips=self.flips_checkbox.value,
            rot90=self.rot90_checkbox.value,
            **{name: spin.value for name, spin in self.augmentation_spins.items()},
        )
        return {
            "optimizer": self.optimizer_combo.value,
            "weight_decay": self.weight_decay_spin.value,
            "schedule": self.schedule_combo.value,
            "loss": self.loss_combo.value,
            "dice_weight": self.dice_weight_spin.value,
            "class_balancing": self.class_balancing_checkbox.value,
            "labelled_patch_fraction": self.labelled_fraction_spin.value,
            "validation_fraction": self.validation_fraction_spin.value,
            "validation_interval": self.validation_interval_spin.value,
            "seed": self.seed_spin.value,
            "device": self.device_combo.value,
            "precision": self.precision_combo.value,
            "augmentation": augmentation,
        }

    def set_config(self, config: TrainingConfig) -> None:
        """Fill this section's controls from ``config``."""
        for combo, choice in (
            (self.optimizer_combo, config.optimizer),
            (self.schedule_combo, config.schedule),
            (self.loss_combo, config.loss),
            (self.device_combo, config.device),
            (self.precision_combo, config.precision),
        ):
            select(combo, choice)
        values = [
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

    @property
    def channel_axis(self) -> int | None:
        """The chosen channel axis of the images, ``None`` for automatic."""
        value = self.channel_axis_combo.value
        return None if value == "auto" else int(value)

    @channel_axis.setter
    def channel_axis(self, axis: int | None) -> None:
        select(self.channel_axis_combo, "auto" if axis is None else str(int(axis)))

    @property
    def tensorboard(self) -> Path | None:
        """The folder that runs are logged into for TensorBoard, ``None`` when logging is off."""
        value = self.tensorboard_edit.value
        return None if value is None or not str(value).strip() else Path(value)

    @tensorboard.setter
    def tensorboard(self, folder: str | Path | None) -> None:
        self.tensorboard_edit.value = None if folder is None else Path(folder)

    def _refresh_dice(self) -> None:
        self.dice_weight_spin.enabled = self.loss_combo.value == Loss.CROSS_ENTROPY_DICE.value
