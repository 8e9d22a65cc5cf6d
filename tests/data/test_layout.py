from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_deepseg.data import to_slices, training_slices, validate_label_set


@pytest.mark.parametrize(
    ("shape", "kwargs", "expected", "leading", "axis"),
    [
        ((20, 30), {}, (1, 1, 20, 30), (), None),
        ((20, 30, 3), {}, (1, 3, 20, 30), (), 2),
        ((20, 30, 4), {}, (1, 4, 20, 30), (), 2),
        ((20, 30, 5), {}, (20, 1, 30, 5), (20,), None),  # not RGB(A): a stack
        ((2, 20, 30), {"in_channels": 2}, (1, 2, 20, 30), (), 0),
        ((5, 2, 20, 30), {"in_channels": 2}, (5, 2, 20, 30), (5,), 1),
        ((2, 5, 20, 30), {"in_channels": 2}, (5, 2, 20, 30), (5,), 0),
        ((2, 2, 20, 30), {"in_channels": 2}, (2, 2, 20, 30), (2,), 1),  # -3 preferred
        ((6, 20, 30), {}, (6, 1, 20, 30), (6,), None),
        ((6, 20, 30), {"in_channels": 1}, (6, 1, 20, 30), (6,), None),
        ((20, 30, 1), {"in_channels": 1}, (1, 1, 20, 30), (), 2),
        ((2, 4, 20, 30, 3), {"in_channels": 3}, (8, 3, 20, 30), (2, 4), 4),
        ((2, 4, 20, 30, 3), {"channel_axis": -1}, (8, 3, 20, 30), (2, 4), 4),
        ((3, 4, 20, 30), {"channel_axis": 0}, (4, 3, 20, 30), (4,), 0),
    ],
)
def test_to_slices_shapes_and_view(shape, kwargs, expected, leading, axis) -> None:
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    view = to_slices(image, **kwargs)
    assert view.data.shape == expected
    assert view.leading_shape == leading
    assert view.channel_axis == axis
    assert np.shares_memory(view.data, image)
    # Slice s, channel c is the original image at the stack index s with channel c.
    last = view.data[-1, -1]
    if axis is None:
        reference = image.reshape(-1, *shape[-2:])[-1]
    else:
        reference = np.moveaxis(image, axis, -3).reshape(-1, *expected[1:])[-1, -1]
    np.testing.assert_array_equal(last, reference)


def test_leading_shape_roundtrip() -> None:
    image = np.random.default_rng(0).random((2, 3, 16, 12, 3)).astype(np.float32)
    view = to_slices(image, channel_axis=-1)
    result = view.data[:, 0] * 2  # (S, H, W), e.g. a per-slice output
    back = view.unflatten(np.stack([result, result + 1]))  # (K, S, H, W) -> (K, T, Z, H, W)
    assert back.shape == (2, 2, 3, 16, 12)
    np.testing.assert_array_equal(back[0], image[..., 0] * 2)
    np.testing.assert_array_equal(back[1, 1, 2], image[1, 2, :, :, 0] * 2 + 1)


def test_to_slices_stays_lazy_for_dask() -> None:
    image = da.ones((4, 2, 32, 32), chunks=(1, 2, 32, 32), dtype=np.float32)
    view = to_slices(image, in_channels=2)
    assert isinstance(view.data, da.Array)
    assert view.data.shape == (4, 2, 32, 32)
    assert view.leading_shape == (4,)
    rgb = to_slices(da.zeros((3, 32, 32, 3), chunks=(1, 32, 32, 3)), in_channels=3)
    assert isinstance(rgb.data, da.Array) and rgb.data.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(np.asarray(view.data[1, 1]), np.ones((32, 32)))


def test_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match=r"expects 3 channels.*\(2, 20, 30\)"):
        to_slices(np.zeros((2, 20, 30)), in_channels=3)
    with pytest.raises(ValueError, match="expects 2 channels but channel axis -1"):
        to_slices(np.zeros((20, 30, 3)), channel_axis=-1, in_channels=2)
    with pytest.raises(ValueError, match="2 to 5 dimensions"):
        to_slices(np.zeros(10))
    with pytest.raises(ValueError, match="2 to 5 dimensions"):
        to_slices(np.zeros((1,) * 6))
    with pytest.raises(ValueError, match="out of range"):
        to_slices(np.zeros((4, 5, 6)), channel_axis=3)


def _pair() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(1).random((3, 16, 16)).astype(np.float32)
    labels = np.zeros((3, 16, 16), np.uint16)
    labels[0, 2:4, 2:6] = 1
    labels[2, 8:10, 1:3] = 2
    return image, labels


def test_training_slices_drops_unlabelled_and_copies() -> None:
    image, labels = _pair()
    image_copy, labels_copy = image.copy(), labels.copy()
    images, labs = training_slices(image, labels)
    assert len(images) == len(labs) == 2  # slice 1 has no label
    assert images[0].shape == (1, 16, 16) and images[0].dtype == np.float32
    assert labs[0].dtype == np.int64
    np.testing.assert_array_equal(images[1][0], image[2])
    np.testing.assert_array_equal(labs[1], labels[2])
    assert not any(np.shares_memory(a, image) for a in images)
    images[0] += 100
    labs[0][:] = 7
    np.testing.assert_array_equal(image, image_copy)
    np.testing.assert_array_equal(labels, labels_copy)


@pytest.mark.parametrize(
    ("image_shape", "labels_shape", "channel_axis", "channels"),
    [
        ((16, 20, 3), (16, 20), None, 3),
        ((2, 16, 20), (16, 20), None, 2),
        ((4, 2, 16, 20), (4, 16, 20), None, 2),
        ((16, 20), (16, 20), None, 1),
        ((16, 20, 3), (16, 20, 3), None, 1),  # same ndim: a 3-slice stack, not RGB
        ((3, 16, 20), (16, 20), 0, 3),
    ],
)
def test_training_channel_inference(image_shape, labels_shape, channel_axis, channels) -> None:
    image = np.ones(image_shape, np.uint8)
    labels = np.ones(labels_shape, np.int32)
    images, _ = training_slices(image, labels, channel_axis=channel_axis)
    assert images[0].shape == (channels, *labels_shape[-2:])
    assert len(images) == int(np.prod(labels_shape[:-2]))


def test_training_slices_prefers_channel_last() -> None:
    image = np.zeros((3, 3, 3), np.float32)  # removing any axis gives the labels' shape
    image[..., 1] = 1
    images, _ = training_slices(image, np.ones((3, 3), np.int64))
    assert images[0].shape == (3, 3, 3)
    np.testing.assert_array_equal(images[0][1], np.ones((3, 3)))
    np.testing.assert_array_equal(images[0][0], np.zeros((3, 3)))


@pytest.mark.parametrize(
    ("image", "labels", "error", "match"),
    [
        (np.zeros((8, 8)), np.ones((8, 9), np.uint8), ValueError, r"same spatial shape.*\(8, 8\).*\(8, 9\)"),
        (np.zeros((8, 8, 3)), np.ones((8, 9), np.uint8), ValueError, r"\(8, 8, 3\).*\(8, 9\)"),
        (np.zeros((2, 8, 8, 3)), np.ones((8,), np.uint8), ValueError, "2 to 5 dimensions"),
        (np.zeros((0, 8)), np.ones((0, 8), np.uint8), ValueError, "must not be empty"),
        (np.array([[np.nan, np.inf], [1, 2]]), np.ones((2, 2), np.uint8), ValueError, "2 NaN or infinite"),
        (np.array([["a", "b"], ["c", "d"]]), np.ones((2, 2), np.uint8), TypeError, "image must be numeric"),
        (np.zeros((8, 8)), np.ones((8, 8), np.float32), TypeError, "labels must be integers; got float32"),
        (np.zeros((8, 8)), np.ones((8, 8), bool), TypeError, "labels must be integers; got bool"),
        (np.zeros((8, 8)), -np.ones((8, 8), np.int8), ValueError, "labels must be >= 0"),
        (
            np.zeros((8, 8)),
            np.zeros((8, 8), np.uint8),
            ValueError,
            r"paint at least one stroke.*0 means unlabelled",
        ),
        (np.zeros((1,) * 6 + (8, 8)), np.ones((1,) * 5 + (8, 8), np.uint8), ValueError, "2 to 5 dimensions"),
        (np.zeros((8,)), np.ones((8,), np.uint8), ValueError, "2 to 5 dimensions"),
    ],
)
def test_training_slices_errors(image, labels, error, match) -> None:
    image_copy, labels_copy = image.copy(), labels.copy()
    with pytest.raises(error, match=match):
        training_slices(image, labels)
    assert image.tobytes() == image_copy.tobytes()
    assert labels.tobytes() == labels_copy.tobytes()


def test_training_slices_bad_channel_axis() -> None:
    with pytest.raises(ValueError, match=r"same spatial shape.*channel axis 0"):
        training_slices(np.zeros((8, 8, 3)), np.ones((8, 8), np.uint8), channel_axis=0)


def test_validate_label_set() -> None:
    one = np.zeros((4, 4), np.int64)
    one[0, 0] = 1
    three = np.zeros((4, 4), np.int64)
    three[1, 1] = 3
    assert validate_label_set([one, three]) == 3
    with pytest.raises(ValueError, match="only class 1 is painted; paint at least two classes"):
        validate_label_set([one, one])
    with pytest.raises(ValueError, match="no labelled pixel"):
        validate_label_set([np.zeros((4, 4), np.int64)])
    five = three.copy()
    five[2, 2] = 5
    with pytest.raises(ValueError, match="labels contain class 5 but the model knows 3 classes"):
        validate_label_set([one, five], num_classes=3)
    assert validate_label_set([one, three], num_classes=4) == 4
