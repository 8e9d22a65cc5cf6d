"""Property-based bad input for the API: images and labels of every dtype, dimension, layout
and container, fed to ``Trainer`` and to ``SegmentationModel.predict`` / ``predict_proba``.

Every drawn input carries what must happen to it: it works (outputs of the right shape and
dtype, classes in 0..K) or it raises ``ValueError`` / ``TypeError`` from napari_deepseg itself
(not from deep inside numpy or torch) with a message naming the problem. The caller's array
is never modified, and read-only, non-contiguous, memory-mapped and dask arrays work.
"""

from __future__ import annotations

import itertools
import traceback
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from napari_deepseg import Trainer

from .conftest import fast_config

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run and in CI
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = (np.bool_, np.uint8, np.uint16, np.int32, np.float16, np.float32, np.float64)
BAD_DTYPES = (np.complex64, np.object_, np.str_)
# Small, fast runs: what is fuzzed is the input, not the network.
TINY = dict(iterations=1, patch_size=32, batch_size=1, encoder="resnet18", ema_decay=0.0)


@dataclass
class Case:
    """A drawn input and what must happen to it: ``error`` is ``None`` (it works) or the exception
    type and a regular expression its message must match."""

    image: Any
    what: str
    error: tuple[type[Exception], str] | None = None
    labels_shape: tuple[int, ...] | None = None  # the result's spatial shape, when it works
    channel_axis: int | None = None  # the image's, for training cases


def _values(rng: np.random.Generator, dtype: Any, shape: tuple[int, ...], extremes: bool) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = (int(info.min), int(info.max)) if extremes else (0, 100)
        return rng.integers(low, high, size=shape, endpoint=True, dtype=dtype)
    out = (rng.standard_normal(shape) * (1e4 if extremes else 1.0)).astype(dtype)
    if extremes and out.size:  # the largest finite values and a subnormal, as sentinels appear
        info = np.finfo(dtype)
        flat = out.reshape(-1)
        flat[rng.integers(0, flat.size, size=3)] = (info.max, -info.max, info.smallest_subnormal)
    return out


@st.composite
def spatial(draw: st.DrawFn, largest: int = 64) -> tuple[int, int]:
    """Height and width from 1 pixel to ``largest``, or a huge aspect ratio (1-3 x 500-3000)."""
    if draw(st.integers(0, 5)) == 0:
        thin, long = draw(st.integers(1, 3)), draw(st.integers(500, 3000))
        return (thin, long) if draw(st.booleans()) else (long, thin)
    return draw(st.integers(1, largest)), draw(st.integers(1, largest))


LAYOUTS = ("2d", "stack", "4d", "5d", "hw1", "channels_last", "channels_first", "rgba", "rgb_stack")


def _shape(layout: str, h: int, w: int, depth: int) -> tuple[int, ...]:
    return {
        "2d": (h, w),
        "stack": (depth, h, w),
        "4d": (2, depth, h, w),
        "5d": (2, 2, depth, h, w),
        "hw1": (h, w, 1),
        "channels_last": (h, w, 3),
        "channels_first": (3, h, w),
        "rgba": (h, w, 4),
        "rgb_stack": (depth, h, w, 3),
    }[layout]


def _prediction_outcome(shape: tuple[int, ...], in_channels: int) -> tuple[tuple[int, ...] | None, str]:
    """The labels shape for an image of ``shape``, by the documented channel rules, or the
    message when the model cannot take it (1-channel and 3-channel models, no channel_axis)."""
    ndim = len(shape)
    if in_channels == 1:
        if ndim == 3 and shape[-1] in (3, 4):
            return None, r"trained on 1-channel images but this image looks like RGB\(A\)"
        return (shape[:-1] if ndim >= 3 and shape[-1] == 1 else shape), ""
    candidates = ([ndim - 1] if ndim >= 3 and shape[-1] == 3 else []) + [
        a for a in range(ndim - 3, -1, -1) if shape[a] == 3
    ]
    if not candidates:
        return None, r"the model expects 3 channels but no axis of the image with shape .* has 3 entries"
    axis = candidates[0]
    return shape[:axis] + shape[axis + 1 :], ""


@st.composite
def prediction_cases(draw: st.DrawFn, in_channels: int) -> Case:
    fault = draw(st.sampled_from(("none",) * 6 + ("dtype", "nan", "empty", "ndim")))
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(LAYOUTS))
    if fault in ("nan", "empty"):  # a layout the model takes, so that only the fault is wrong
        layout = "2d" if in_channels == 1 else "channels_last"
    h, w = draw(spatial())
    if layout in ("4d", "5d", "rgb_stack") or max(h, w) > 64:
        h, w = min(h, 16), min(w, 16)  # keep multi-slice images cheap
    shape = _shape(layout, h, w, draw(st.integers(1, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = _values(rng, dtype, shape, extremes=draw(st.booleans()))
    if fault == "dtype":
        bad = draw(st.sampled_from(BAD_DTYPES))
        return Case(image.astype(bad), f"{np.dtype(bad)} image", (TypeError, r"image must be numeric"))
    if fault == "nan":
        image = image.astype(draw(st.sampled_from((np.float16, np.float32, np.float64))))
        image.reshape(-1)[rng.integers(0, image.size)] = draw(st.sampled_from((np.nan, np.inf, -np.inf)))
        return Case(image, "NaN / inf", (ValueError, r"NaN or infinite"))
    if fault == "empty":
        empty = list(shape)
        empty[draw(st.integers(0, 1))] = 0  # H or W
        return Case(np.zeros(empty, dtype), f"empty {tuple(empty)}", (ValueError, r"empty"))
    if fault == "ndim":
        odd = draw(
            st.sampled_from(
                (image.reshape(-1)[0], image.reshape(-1), image.reshape((1,) * (6 - image.ndim) + shape))
            )
        )
        return Case(np.asarray(odd), f"{np.ndim(odd)}D", (ValueError, r"must have 2 to 5 dimensions"))
    labels_shape, message = _prediction_outcome(shape, in_channels)
    error = None if labels_shape is not None else (ValueError, message)
    return Case(image, f"{layout} {shape} {np.dtype(dtype)}", error, labels_shape)


_memmaps = itertools.count()


def _contain(image: np.ndarray, how: str, folder: Any) -> Any:
    """The same values as a view, read-only, memory-mapped or dask array."""
    if how == "strided":  # every other pixel of a bigger array, reversed: no contiguous layout
        big = np.repeat(image, 2, axis=-1)[..., ::-1]
        return big[..., ::-2][..., ::-1]
    if how == "transposed":
        return np.ascontiguousarray(np.swapaxes(image, -1, -2)).swapaxes(-1, -2)
    if how == "read_only":
        out = image.copy()
        out.flags.writeable = False
        return out
    if how == "memmap":  # read-only, as the CLI maps a TIFF
        path = folder / f"{next(_memmaps)}.npy"
        mapped = np.lib.format.open_memmap(path, "w+", image.dtype, image.shape)
        mapped[...] = image
        mapped.flush()
        del mapped
        return np.load(path, mmap_mode="r")
    if how == "dask":
        return da.from_array(image, chunks=16)
    return image


def _plain(array: np.ndarray) -> bool:
    """Numeric, not empty, at least 2D: what every container can hold."""
    return array.dtype.kind in "biuf" and array.size > 0 and array.ndim >= 2


def _snapshot(array: Any) -> np.ndarray:
    return np.array(array, copy=True)


def _unchanged(array: Any, before: np.ndarray) -> bool:
    now = np.asarray(array)
    return now.dtype == before.dtype and now.shape == before.shape and now.tobytes() == before.tobytes()


def assert_refused(call: Any, error: tuple[type[Exception], str]) -> None:
    kind, pattern = error
    with pytest.raises(kind, match=pattern) as info:
        call()
    origin = traceback.extract_tb(info.tb)[-1].filename
    assert "napari_deepseg" in origin, f"raised from {origin}, not from napari_deepseg: {info.value}"


def _pair(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    image = rng.random(shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[: shape[0] // 2, : shape[1] // 2] = 1
    labels[shape[0] // 2 :, shape[1] // 2 :] = 2
    return image, labels


@pytest.fixture(scope="module")
def models() -> dict[int, Any]:
    rng = np.random.default_rng(0)
    grey, labels = _pair(rng, (40, 48))
    out = {}
    for channels, image in ((1, grey), (3, np.stack([grey, grey**2, 1 - grey], axis=-1))):
        trainer = Trainer(image, labels, fast_config(**TINY))
        list(trainer.run())
        out[channels] = trainer.model
    return out


CONTAINERS = ("numpy", "strided", "transposed", "read_only", "memmap", "dask")


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_prediction_works_or_names_the_problem_and_never_touches_the_image(models, tmp_path_factory, data):
    in_channels = data.draw(st.sampled_from((1, 3)), label="model channels")
    case = data.draw(prediction_cases(in_channels), label="case")
    how = data.draw(st.sampled_from(CONTAINERS if _plain(case.image) else ("numpy",)), label="container")
    image = _contain(case.image, how, tmp_path_factory.getbasetemp())
    before = _snapshot(image)
    model = models[in_channels]
    event("refused" if case.error else "works")
    if case.error is not None:
        assert_refused(lambda: model.predict(image), case.error)
        assert_refused(lambda: model.predict_proba(image), case.error)
    else:
        labels = model.predict(image)
        assert labels.shape == case.labels_shape and labels.dtype == np.uint8
        assert labels.min() >= 1 and labels.max() <= model.num_classes  # no threshold: never 0
        probabilities = model.predict_proba(image)
        assert probabilities.shape == (model.num_classes, *case.labels_shape)
        assert probabilities.dtype == np.float32 and np.isfinite(probabilities).all()
        np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-4)
    assert _unchanged(image, before), f"{case.what} ({how}) was modified"


LABEL_DTYPES = (np.uint8, np.uint16, np.int8, np.int32, np.int64, np.uint64)
TRAINING_FAULTS = (
    ("none",) * 8
    + ("many_classes",) * 2
    + ("one_class", "zeros", "negative", "float_labels", "bool_labels", "too_many_classes")
    + ("mismatch", "nan", "empty", "image_dtype", "ndim")
)


@st.composite
def training_cases(draw: st.DrawFn) -> tuple[Case, Any, int]:
    """(image case, labels, number of classes when it works)."""
    fault = draw(st.sampled_from(TRAINING_FAULTS), label="fault")
    h, w = draw(spatial(largest=48))
    h, w = min(h, 64), min(w, 64)  # training patches are 32: a long thin image is padded
    layout = draw(st.sampled_from(("2d", "stack", "channels_last", "channels_first")))
    depth = draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spatial_shape = (depth, h, w) if layout == "stack" else (h, w)
    image = _values(rng, draw(st.sampled_from(DTYPES)), _shape(layout, h, w, depth), draw(st.booleans()))
    label_dtype = np.dtype(draw(st.sampled_from(LABEL_DTYPES)))
    classes = draw(st.integers(300, 320)) if fault == "many_classes" else draw(st.integers(2, 4))
    if classes > np.iinfo(label_dtype).max:
        label_dtype = np.dtype(np.uint16)
    labels = rng.integers(0, classes + 1, size=spatial_shape).astype(label_dtype)
    flat = labels.reshape(-1)
    flat[:2] = (1, classes) if flat.size >= 2 else 1  # every case has classes 1 and K painted
    axis = {"channels_last": -1, "channels_first": 0}.get(layout)
    works = Case(image, f"{layout} {image.shape} {image.dtype}, labels {label_dtype}", channel_axis=axis)
    if fault in ("none", "many_classes"):
        if flat.size < 2:  # one pixel holds one class
            return Case(image, works.what, (ValueError, r"only class 1 is painted")), labels, 0
        return works, labels, classes
    if fault == "one_class":
        only = draw(st.integers(1, 5))
        return Case(image, "one class", (ValueError, rf"only class {only} is painted")), labels * 0 + only, 0
    if fault == "zeros":
        return Case(image, "all zeros", (ValueError, r"no labelled pixel")), labels * 0, 0
    if fault == "negative":
        signed = labels.astype(draw(st.sampled_from((np.int8, np.int32, np.int64))))
        signed.reshape(-1)[-1] = -draw(st.integers(1, 100))
        return Case(image, "negative labels", (ValueError, r"labels must be >= 0")), signed, 0
    if fault == "float_labels":
        floats = labels.astype(draw(st.sampled_from((np.float32, np.float64))))
        return Case(image, "float labels", (TypeError, r"labels must be integers; got float")), floats, 0
    if fault == "bool_labels":
        return Case(image, "bool labels", (TypeError, r"labels must be integers; got bool")), labels > 0, 0
    if fault == "too_many_classes":
        big = labels.astype(np.int64)
        big.reshape(-1)[-1] = draw(st.sampled_from((1001, 65536, 2**40)))
        if label_dtype == np.uint64:
            big = big.astype(np.uint64)
            big.reshape(-1)[-1] = 2**63 + 5  # would wrap to a negative int64
        return Case(image, "too many classes", (ValueError, r"at most 1000 classes")), big, 0
    if fault == "mismatch":
        other = np.zeros((h + 1, w), label_dtype) + 1
        other.reshape(-1)[0] = 2
        return Case(image, "shape mismatch", (ValueError, r"same spatial shape")), other, 0
    if fault == "nan":
        bad = image.astype(np.float32)
        bad.reshape(-1)[-1] = draw(st.sampled_from((np.nan, np.inf, -np.inf)))
        return Case(bad, "NaN / inf", (ValueError, r"NaN or infinite")), labels, 0
    if fault == "empty":
        return (
            Case(np.zeros((0, w), np.float32), "empty", (ValueError, r"must not be empty")),
            labels[..., :0, :],
            0,
        )
    if fault == "image_dtype":
        bad = image.astype(draw(st.sampled_from(BAD_DTYPES)))
        return Case(bad, "bad image dtype", (TypeError, r"image must be numeric")), labels, 0
    odd = np.zeros((1, 1, 1, 1, 1, h, w), np.float32)  # 7D
    return (
        Case(odd, "7D", (ValueError, r"must have 2 to 5 dimensions")),
        np.zeros((1,) * 5 + (h, w), np.uint8) + 1,
        0,
    )


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_training_works_or_names_the_problem_and_never_touches_the_inputs(tmp_path_factory, data):
    case, labels, classes = data.draw(training_cases(), label="case")
    plain = _plain(case.image) and _plain(labels)
    how = data.draw(st.sampled_from(CONTAINERS if plain else ("numpy",)), label="container")
    image = _contain(case.image, how, tmp_path_factory.getbasetemp())
    labels = _contain(labels, how, tmp_path_factory.getbasetemp())
    image_before, labels_before = _snapshot(image), _snapshot(labels)
    event("refused" if case.error else "works")
    if case.error is not None:
        assert_refused(lambda: Trainer(image, labels, fast_config(**TINY)), case.error)
    else:
        trainer = Trainer(image, labels, fast_config(**TINY))
        assert trainer.num_classes == classes
        (record,) = list(trainer.run())
        assert np.isfinite(record.loss)
        # The training image itself, with its channel axis named where it has one; a grey stack
        # of 3 or 4-pixel-wide images is refused as RGB without it (documented ambiguity).
        expected, message = _prediction_outcome(np.shape(image), trainer.data.in_channels)
        if case.channel_axis is not None:
            expected = np.shape(labels)
        if expected is None:
            assert_refused(lambda: trainer.model.predict(image), (ValueError, message))
        else:
            predicted = trainer.model.predict(image, channel_axis=case.channel_axis)
            assert predicted.shape == expected and predicted.dtype == (
                np.uint8 if classes < 256 else np.uint16
            )
            assert predicted.min() >= 1 and predicted.max() <= classes
    assert _unchanged(image, image_before), f"{case.what} ({how}): image modified"
    assert _unchanged(labels, labels_before), f"{case.what} ({how}): labels modified"
