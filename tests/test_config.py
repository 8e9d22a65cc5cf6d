import math

import pytest

from napari_deepseg.config import AugmentationConfig, Loss, Optimizer, Precision, Schedule, TrainingConfig

# (field, values at its limits that are accepted, values past them that are refused)
TRAINING_LIMITS = [
    ("iterations", [1, None], [0, -1, 2.5, True]),
    ("batch_size", [1], [0, 1.0, True]),
    ("patch_size", [32], [31, 0, 64.0]),
    ("validation_interval", [1], [0, False]),
    ("max_minutes", [1e-3, None], [0, -1.0, True]),
    ("learning_rate", [1e-9, None], [0, -1e-3]),
    ("ema_decay", [0.0, 0.999], [1.0, -0.01]),
    ("regularisation_weight", [0.0], [-1e-9, math.nan]),
    ("validation_fraction", [0.0, 0.99], [1.0, -0.01]),
    ("labelled_patch_fraction", [0.0, 1.0], [1.01, -0.01]),
    ("weight_decay", [0.0], [-1e-6, math.nan]),
    ("dice_weight", [0.0], [-0.1, math.nan]),
    ("normalisation", ["per_image", "dataset"], ["global", ""]),
    ("optimizer", ["adam", "adamw", "sgd"], ["rmsprop"]),
    ("schedule", ["constant", "cosine", "step"], ["linear"]),
    ("loss", ["ce", "ce_dice"], ["dice"]),
    ("precision", ["auto", "fp32", "bf16"], ["fp16"]),
]

AUGMENTATION_LIMITS = [
    ("rotation_degrees", [0.0], [-1.0, math.nan]),
    ("scale", [0.0, 0.99], [1.0, -0.1]),
    ("brightness", [0.0], [-0.1]),
    ("contrast", [0.0], [-0.1]),
    ("hue", [0.0, 0.5], [0.51, -0.01]),
    ("saturation", [0.0], [-0.1]),
    ("noise_std", [0.0], [-0.01]),
    ("gamma", [0.0, 2.0], [-0.1, math.nan]),
    ("overexposure", [0.0, 0.99], [1.0, -0.1]),
]


def _cases(limits):
    return [(name, value) for name, _, bad in limits for value in bad]


def _accepted(limits):
    return [(name, value) for name, good, _ in limits for value in good]


@pytest.mark.parametrize(("name", "value"), _accepted(TRAINING_LIMITS))
def test_training_values_at_their_limits_are_kept(name, value):
    config = TrainingConfig(**{name: value})
    assert getattr(config, name) == value  # str enums compare equal to their values


@pytest.mark.parametrize(("name", "value"), _cases(TRAINING_LIMITS))
def test_training_values_past_their_limits_name_the_field(name, value):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        TrainingConfig(**{name: value})


@pytest.mark.parametrize(("name", "value"), _accepted(AUGMENTATION_LIMITS))
def test_augmentation_values_at_their_limits_are_kept(name, value):
    assert getattr(AugmentationConfig(**{name: value}), name) == value


@pytest.mark.parametrize(("name", "value"), _cases(AUGMENTATION_LIMITS))
def test_augmentation_values_past_their_limits_name_the_field(name, value):
    with pytest.raises(ValueError, match=rf"augmentation {name} must be"):
        AugmentationConfig(**{name: value})
    with pytest.raises(ValueError, match=rf"augmentation {name} must be"):  # also inside a training config
        TrainingConfig(augmentation={name: value})


def test_enum_fields_take_their_strings_and_list_the_choices():
    config = TrainingConfig(optimizer="sgd", schedule="step", loss="ce_dice", precision="fp32")
    assert (config.optimizer, config.schedule, config.loss, config.precision) == (
        Optimizer.SGD,
        Schedule.STEP,
        Loss.CROSS_ENTROPY_DICE,
        Precision.FP32,
    )
    with pytest.raises(ValueError, match="optimizer must be one of 'adam', 'adamw', 'sgd', got 'rmsprop'"):
        TrainingConfig(optimizer="rmsprop")


def test_dict_round_trip_and_unknown_options():
    config = TrainingConfig(
        optimizer="adamw", iterations=None, max_minutes=2.5, augmentation={"flips": False, "hue": 0.2}
    )
    data = config.to_dict()
    assert data["optimizer"] == "adamw" and data["augmentation"]["hue"] == 0.2
    assert TrainingConfig.from_dict(data) == config
    assert config.until_stopped is False and TrainingConfig(iterations=None).until_stopped is True
    with pytest.raises(ValueError, match="unknown training option\\(s\\): colour, epochs"):
        TrainingConfig.from_dict({"epochs": 3, "colour": "red"})
