"""Property-based configs: every field of ``TrainingConfig``, ``AugmentationConfig`` and the
prediction options at, inside and past its limits, and values of the wrong type.

A value is accepted exactly when the field's documented rule allows it; a refused value raises
``ValueError`` / ``TypeError`` naming the field. Accepted configs at their limits then train.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from napari_deepseg import AugmentationConfig, PredictionOptions, TilingOptions, Trainer, TrainingConfig

from .conftest import fast_config

FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _real(v) and math.isfinite(v)


# field -> the documented rule (True: accepted). Numbers that are bools count as numbers where
# Python does (True == 1) except for the integer fields, which refuse bools.
TRAINING_RULES: dict[str, Callable[[Any], bool]] = {
    "iterations": lambda v: v is None or (_int(v) and v >= 1),
    "batch_size": lambda v: _int(v) and 1 <= v <= 1024,
    "patch_size": lambda v: _int(v) and 32 <= v <= 4096,
    "validation_interval": lambda v: _int(v) and v >= 1,
    "seed": lambda v: _int(v) and 0 <= v <= 2**63 - 1,
    "max_minutes": lambda v: v is None or (_real(v) and v > 0),
    "learning_rate": lambda v: v is None or (isinstance(v, (int, float)) and 0 < v < math.inf),
    "weight_decay": lambda v: isinstance(v, (int, float)) and 0 <= v < math.inf,
    "dice_weight": lambda v: isinstance(v, (int, float)) and 0 <= v < math.inf,
    "regularisation_weight": lambda v: isinstance(v, (int, float)) and 0 <= v < math.inf,
    "ema_decay": lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
    "validation_fraction": lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
    "labelled_patch_fraction": lambda v: isinstance(v, (int, float)) and 0 <= v <= 1,
    "pretrained": lambda v: isinstance(v, bool),
    "class_balancing": lambda v: isinstance(v, bool),
    "device": lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
    "normalisation": lambda v: v in ("per_image", "dataset"),
    "optimizer": lambda v: v in ("adam", "adamw", "sgd"),
    "schedule": lambda v: v in ("constant", "cosine", "step"),
    "loss": lambda v: v in ("ce", "ce_dice"),
    "precision": lambda v: v in ("auto", "fp32", "bf16"),
}


def _strength(top: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (int, float)) and 0 <= v <= top


AUGMENTATION_RULES: dict[str, Callable[[Any], bool]] = {
    "flips": lambda v: isinstance(v, bool),
    "rot90": lambda v: isinstance(v, bool),
    "rotation_degrees": _strength(180),
    "scale": lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
    "brightness": _strength(1000),
    "contrast": _strength(1000),
    "hue": _strength(0.5),
    "saturation": _strength(1000),
    "noise_std": _strength(1000),
    "gamma": _strength(1000),
    "overexposure": lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
}
# The limits themselves and their neighbours, so every boundary is hit, not only hoped for.
EDGES = (0, 1, -1, 31, 32, 33, 180, 181, 1000, 1001, 1024, 1025, 4096, 4097, 2**63 - 1, 2**63, 2**64)
FLOAT_EDGES = (0.0, -0.0, 1e-300, 0.5, 0.51, 0.999999, 1.0, 1.000001, 180.0, 1000.0, 1000.5, 1e300)
WEIRD = ("", "1", "auto", "cpu", "cuda:0", "meta", "gpu", "ce", "sgd", "step", "bf16", "dataset", [1], {})

values = st.one_of(
    st.sampled_from(EDGES),
    st.integers(-5, 5000),
    st.sampled_from(FLOAT_EDGES),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(WEIRD),
)


def _check(build: Callable[[], Any], accepted: bool, field: str) -> Any:
    event("accepted" if accepted else "refused")
    if accepted:
        return build()
    with pytest.raises((ValueError, TypeError)) as info:
        build()
    assert re.search(rf"\b{field}\b", str(info.value)), f"message does not name {field}: {info.value}"
    assert "\n" not in str(info.value)
    return None


@settings(FUZZ, max_examples=400)
@given(field=st.sampled_from(sorted(TRAINING_RULES)), value=values)
def test_a_training_field_is_accepted_exactly_within_its_limits(field, value):
    config = _check(lambda: TrainingConfig(**{field: value}), TRAINING_RULES[field](value), field)
    if config is not None:
        assert getattr(config, field) == value
        assert TrainingConfig.from_dict(config.to_dict()) == config  # what a model file stores


@settings(FUZZ, max_examples=250)
@given(field=st.sampled_from(sorted(AUGMENTATION_RULES)), value=values)
def test_an_augmentation_field_is_accepted_exactly_within_its_limits(field, value):
    accepted = AUGMENTATION_RULES[field](value)
    _check(lambda: AugmentationConfig(**{field: value}), accepted, field)
    _check(lambda: TrainingConfig(augmentation={field: value}), accepted, field)  # as a model file holds it


def test_augmentation_of_the_wrong_kind_is_named():
    for bad in (None, 0.5, "flips", [True]):
        with pytest.raises(TypeError, match=r"augmentation must be an AugmentationConfig or a dict"):
            TrainingConfig(augmentation=bad)
    with pytest.raises(TypeError, match=r"bogus"):
        TrainingConfig(augmentation={"bogus": 1})
    with pytest.raises(ValueError, match=r"unknown training option\(s\): bogus"):
        TrainingConfig.from_dict({"bogus": 1})


# Integer tiling values: any is accepted exactly when the tiling rules allow it.
@settings(FUZZ, max_examples=150)
@given(
    tile=st.one_of(st.sampled_from((0, 31, 32, 33, 1024)), st.integers(-5, 2048)),
    overlap=st.one_of(st.sampled_from((-1, 0, 31, 32, 1023)), st.integers(-5, 2048)),
    batch=st.one_of(st.sampled_from((-1, 0, 1)), st.integers(-5, 64)),
)
def test_tiling_options_are_accepted_exactly_within_their_limits(tile, overlap, batch):
    accepted = tile >= 32 and 0 <= overlap < tile and batch >= 1
    if accepted:
        options = PredictionOptions().replace(tile_size=tile, overlap=overlap, batch_size=batch)
        assert options.tiling == TilingOptions(tile, overlap, batch)
        return
    with pytest.raises(ValueError, match=r"tile_size|overlap|batch_size"):
        TilingOptions(tile, overlap, batch)


@pytest.mark.parametrize(
    ("field", "value"), [("tile_size", "512"), ("tile_size", None), ("batch_size", 1.5), ("overlap", True)]
)
def test_tiling_options_of_the_wrong_type_are_named(field, value):
    with pytest.raises((TypeError, ValueError), match=field):
        TilingOptions(**{field: value})
        raise AssertionError("accepted")


@settings(FUZZ, max_examples=60)
@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from((0, 1, -1, 2, "0.5", None))
    )
)
def test_min_probability_outside_0_1_is_named(value):
    from napari_deepseg.prediction import apply_threshold

    probabilities = np.full((2, 3, 3), 0.5, np.float32)
    accepted = _real(value) and 0 <= value <= 1
    if accepted:
        labels = apply_threshold(probabilities, value)
        assert labels.shape == (3, 3) and set(np.unique(labels)) <= {0, 1}
    else:
        with pytest.raises((ValueError, TypeError), match="min_probability"):
            apply_threshold(probabilities, value)


# Accepted values at their limits train: the run works or stops with the divergence message.
limits = st.fixed_dictionaries(
    {
        "optimizer": st.sampled_from(("adam", "adamw", "sgd")),
        "schedule": st.sampled_from(("constant", "cosine", "step")),
        "loss": st.sampled_from(("ce", "ce_dice")),
        "learning_rate": st.sampled_from((None, 1e-300, 1e-9, 1.0)),
        "weight_decay": st.sampled_from((0.0, 1.0, 1e3)),
        "dice_weight": st.sampled_from((0.0, 1e3)),
        "regularisation_weight": st.sampled_from((0.0, 1.0)),
        "ema_decay": st.sampled_from((0.0, 0.999999)),
        "validation_fraction": st.sampled_from((0.0, 0.5, 0.99)),
        "validation_interval": st.sampled_from((1, 10**9)),
        "labelled_patch_fraction": st.sampled_from((0.0, 1.0)),
        "class_balancing": st.booleans(),
        "patch_size": st.sampled_from((32, 33, 48)),
        "batch_size": st.sampled_from((1, 3)),
        "seed": st.sampled_from((0, 2**63 - 1)),
        "normalisation": st.sampled_from(("per_image", "dataset")),
        "precision": st.sampled_from(("fp32", "bf16")),
        "augmentation": st.fixed_dictionaries(
            {
                "flips": st.booleans(),
                "rot90": st.booleans(),
                "rotation_degrees": st.sampled_from((0.0, 180.0)),
                "scale": st.sampled_from((0.0, 0.99)),
                "brightness": st.sampled_from((0.0, 1000.0)),
                "contrast": st.sampled_from((0.0, 1000.0)),
                "hue": st.sampled_from((0.0, 0.5)),
                "saturation": st.sampled_from((0.0, 1000.0)),
                "noise_std": st.sampled_from((0.0, 1000.0)),
                "gamma": st.sampled_from((0.0, 1000.0)),
                "overexposure": st.sampled_from((0.0, 0.99)),
            }
        ),
    }
)


@settings(FUZZ, max_examples=8)
@given(changes=limits, rgb=st.booleans())
def test_configs_at_their_limits_train_or_stop_with_the_divergence_message(changes, rgb):
    rng = np.random.default_rng(0)
    image = rng.random((40, 44, 3) if rgb else (40, 44)).astype(np.float32)
    labels = np.zeros((40, 44), np.uint8)
    labels[2:20, 2:40], labels[22:38, 2:40] = 1, 2
    trainer = Trainer(image, labels, fast_config(iterations=2, encoder="resnet18", **changes))
    try:
        records = list(trainer.run())
    except FloatingPointError as err:  # e.g. a learning rate of 1 with 1000x noise
        assert "diverged" in str(err) and "lower the learning rate" in str(err)
        event("diverged")
        return
    event("trained")
    assert len(records) == 2 and all(math.isfinite(r.loss) for r in records)
    assert trainer.model.predict(image).shape == (40, 44)


def test_architecture_and_encoder_of_the_wrong_type_or_unknown_are_named():
    for field, value, error, message in (
        ("architecture", None, TypeError, r"architecture must be a string, got None"),
        ("encoder", 3, TypeError, r"encoder must be a string \(or None for the default\), got 3"),
        ("normalisation", None, TypeError, r"normalisation must be a string, got None"),
    ):
        with pytest.raises(error, match=message):
            TrainingConfig(**{field: value})
    image = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    labels = np.array([[1, 2] * 4] * 8, np.uint8)
    with pytest.raises(ValueError, match=r"unknown architecture 'nope'; available: "):
        Trainer(image, labels, fast_config(architecture="nope"))
    with pytest.raises(ValueError, match=r"encoder 'nope' is not available for unet; choose one of "):
        Trainer(image, labels, fast_config(encoder="nope"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_named():
    image = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"device 'cuda' was asked for but no CUDA GPU is available"):
        Trainer(image, np.array([[1, 2] * 4] * 8, np.uint8), fast_config(device="cuda"))
