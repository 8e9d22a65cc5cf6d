"""Configuration records for training; frozen so a run cannot change under its own feet."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# Upper limits that keep a typo from asking for terabytes: a 4096-pixel patch already needs
# gigabytes of activations per image.
MAX_PATCH_SIZE = 4096
MAX_BATCH_SIZE = 1024
MAX_SEED = 2**63 - 1  # what both numpy's and torch's generators take
MAX_AUGMENTATION = 1000.0  # any strength beyond this saturates every image (float32 overflows later)
DEVICE_NAMES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class Optimizer(str, Enum):
    ADAM = "adam"
    ADAMW = "adamw"
    SGD = "sgd"


class Schedule(str, Enum):
    CONSTANT = "constant"
    COSINE = "cosine"
    STEP = "step"


class Loss(str, Enum):
    CROSS_ENTROPY = "ce"
    CROSS_ENTROPY_DICE = "ce_dice"


class Precision(str, Enum):
    AUTO = "auto"  # bf16 autocast on CPUs with AMX/AVX512-BF16, mixed fp16/bf16 on CUDA, else fp32
    FP32 = "fp32"
    BF16 = "bf16"


@dataclass(frozen=True)
class AugmentationConfig:
    """Joint image + mask augmentation. A strength of 0 (or ``False``) turns an augmentation off.

    The defaults suit both fluorescence and H&E tiles.
    """

    flips: bool = True
    rot90: bool = True
    rotation_degrees: float = 15.0
    scale: float = 0.15  # zoom factor drawn from [1 - scale, 1 + scale]
    brightness: float = 0.15  # additive shift, in units of the normalised intensity range
    contrast: float = 0.15  # multiplicative factor drawn from [1 - contrast, 1 + contrast]
    hue: float = 0.03  # RGB images only, as torchvision's adjust_hue factor (max 0.5)
    saturation: float = 0.15  # RGB images only
    noise_std: float = 0.03  # gaussian noise, in units of the normalised intensity range
    gamma: float = 0.0  # gamma drawn log-uniformly from [1 / (1 + gamma), 1 + gamma]
    overexposure: float = 0.0  # half the samples: up to this share of a channel saturates (log-uniform)

    def __post_init__(self) -> None:
        for name in ("flips", "rot90"):
            check_bool(f"augmentation {name}", getattr(self, name))
        for name in (
            "rotation_degrees",
            "scale",
            "brightness",
            "contrast",
            "hue",
            "saturation",
            "noise_std",
            "gamma",
            "overexposure",
        ):
            value = check_number(f"augmentation {name}", getattr(self, name))
            if not value >= 0:
                raise ValueError(f"augmentation {name} must be >= 0, got {value!r}")
            if not value <= MAX_AUGMENTATION:
                raise ValueError(f"augmentation {name} must be <= {MAX_AUGMENTATION:g}, got {value!r}")
        if self.rotation_degrees > 180:
            raise ValueError(f"augmentation rotation_degrees must be <= 180, got {self.rotation_degrees!r}")
        if self.overexposure >= 1:
            raise ValueError(f"augmentation overexposure must be < 1, got {self.overexposure!r}")
        if self.scale >= 1:
            raise ValueError(f"augmentation scale must be < 1, got {self.scale!r}")
        if self.hue > 0.5:
            raise ValueError(f"augmentation hue must be <= 0.5, got {self.hue!r}")

    @classmethod
    def disabled(cls) -> AugmentationConfig:
        return cls(
            flips=False,
            rot90=False,
            rotation_degrees=0,
            scale=0,
            brightness=0,
            contrast=0,
            hue=0,
            saturation=0,
            noise_std=0,
            gamma=0,
            overexposure=0,
        )


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that defines a training run; stored in the model file.

    ``encoder=None`` takes the architecture's default encoder. ``device="auto"`` picks
    CUDA, then MPS, then CPU.

    A run ends after ``iterations`` or ``max_minutes`` of training, whichever comes first, and
    the learning-rate schedule follows the elapsed share of that limit. With both ``None`` it
    runs until it is stopped, at a constant learning rate after the warm-up.

    ``normalisation``: ``"per_image"`` scales every image by its own percentiles (robust to
    brightness and stain changes); ``"dataset"`` applies the training images' bounds to every
    image (when absolute intensity carries the class).

    ``ema_decay``: the model you get (preview, prediction, saving) holds an exponential moving
    average of the weights with this decay (0 turns it off), so it does not depend on the
    iteration at which training stops.

    ``regularisation_weight``: weight of the CRF (Potts) loss that asks unlabelled pixels to
    take the class of similar-looking neighbours (0 turns it off). 0.25 by default: on held-out
    images it lifted nucleus IoU on every seed of both benchmark sets (docs/benchmarks.md,
    section 0), for ~9 % more time per iteration.
    """

    architecture: str = "unet"
    encoder: str | None = None
    pretrained: bool = True
    iterations: int | None = 500
    max_minutes: float | None = None
    batch_size: int = 4
    patch_size: int = 128  # measured: more, smaller steps learn more per CPU-minute (docs/benchmarks.md)
    learning_rate: float | None = None  # None: the architecture's default (1e-3; FCN-8s 3e-4)
    optimizer: Optimizer = Optimizer.ADAM
    weight_decay: float = 1e-4
    schedule: Schedule = Schedule.COSINE
    loss: Loss = Loss.CROSS_ENTROPY
    dice_weight: float = 0.5
    class_balancing: bool = False
    labelled_patch_fraction: float = 0.9  # share of patches centred on a labelled pixel
    validation_fraction: float = 0.1
    validation_interval: int = 50
    seed: int = 0
    device: str = "auto"
    precision: Precision = Precision.AUTO
    normalisation: str = "per_image"
    ema_decay: float = 0.99
    regularisation_weight: float = 0.25
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

    def __post_init__(self) -> None:
        # Accept plain strings (CLI, JSON) for the enum fields.
        for name, enum in (
            ("optimizer", Optimizer),
            ("schedule", Schedule),
            ("loss", Loss),
            ("precision", Precision),
        ):
            object.__setattr__(self, name, _as_enum(enum, name, getattr(self, name)))
        if isinstance(self.augmentation, dict):
            object.__setattr__(self, "augmentation", AugmentationConfig(**self.augmentation))
        if not isinstance(self.augmentation, AugmentationConfig):
            raise TypeError(
                "augmentation must be an AugmentationConfig or a dict of its fields, "
                f"got {self.augmentation!r}"
            )
        for name in ("pretrained", "class_balancing"):
            check_bool(name, getattr(self, name))
        for name in ("architecture", "device", "normalisation"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.encoder is not None and not isinstance(self.encoder, str):
            raise TypeError(f"encoder must be a string (or None for the default), got {self.encoder!r}")
        check_device(self.device)
        for name in _NUMBER_FIELDS:
            value = getattr(self, name)
            if value is not None or name not in ("max_minutes", "learning_rate"):  # None: no limit, default
                check_number(name, value)
        for name in ("iterations", "batch_size", "patch_size", "validation_interval"):
            value = getattr(self, name)
            if value is None and name == "iterations":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, limit in (("patch_size", MAX_PATCH_SIZE), ("batch_size", MAX_BATCH_SIZE)):
            if getattr(self, name) > limit:
                raise ValueError(f"{name} must be at most {limit}, got {getattr(self, name)}")
        seed: Any = self.seed  # annotated int, but anything may come in
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
        if self.max_minutes is not None and (isinstance(self.max_minutes, bool) or not self.max_minutes > 0):
            raise ValueError(f"max_minutes must be > 0 (or None for no time limit), got {self.max_minutes!r}")
        if self.normalisation not in ("per_image", "dataset"):
            raise ValueError(f"normalisation must be 'per_image' or 'dataset', got {self.normalisation!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.patch_size < 32:
            raise ValueError(f"patch_size must be at least 32 pixels, got {self.patch_size}")
        if self.learning_rate is not None and not 0 < self.learning_rate < math.inf:
            raise ValueError(f"learning_rate must be > 0 and finite, got {self.learning_rate!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if not 0 <= self.labelled_patch_fraction <= 1:
            raise ValueError(
                f"labelled_patch_fraction must be in [0, 1], got {self.labelled_patch_fraction!r}"
            )
        for name in ("weight_decay", "dice_weight", "regularisation_weight"):
            if not 0 <= getattr(self, name) < math.inf:  # also refuses NaN
                raise ValueError(f"{name} must be >= 0 and finite, got {getattr(self, name)!r}")

    @property
    def until_stopped(self) -> bool:
        """Neither an iteration nor a time limit: the run goes on until it is stopped."""
        return self.iterations is None and self.max_minutes is None

    def replace(self, **changes: Any) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (enums as their string values)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, Enum):
                out[key] = value.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**data)


_NUMBER_FIELDS = (
    "max_minutes",
    "learning_rate",
    "weight_decay",
    "dice_weight",
    "labelled_patch_fraction",
    "validation_fraction",
    "ema_decay",
    "regularisation_weight",
)


def check_bool(name: str, value: Any) -> None:
    # bool("no") is True: a string or a number here is a mistake, not a choice.
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_number(name: str, value: Any) -> float:
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_device(name: Any) -> None:
    """Refuse a device name that is not one of :data:`DEVICE_NAMES` (``"meta"``, ``"gpu"``, ...)
    before torch is asked, so the message says what to type instead."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ValueError(f"device must be {DEVICE_NAMES}, got {name!r}")


def _as_enum(enum: type[Enum], name: str, value: Any) -> Enum:
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}") from None
