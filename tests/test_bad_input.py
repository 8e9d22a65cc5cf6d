"""Bad input gets a clear error naming the problem, and the user's arrays are never modified."""

import numpy as np
import pytest

from napari_deepseg import Trainer

from .conftest import fast_config


def _pair():
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    labels = np.zeros((40, 50), np.uint8)
    labels[5:10, 5:20] = 1
    labels[25:30, 5:20] = 2
    return image, labels


def _float_labels():
    image, labels = _pair()
    return image, labels.astype(np.float32)


def _negative_labels():
    image, labels = _pair()
    labels = labels.astype(np.int16)
    labels[0, 0] = -1
    return image, labels


def _nan_image():
    image, labels = _pair()
    image[3, 3] = np.nan
    return image, labels


def _inf_image():
    image, labels = _pair()
    image[3, 4] = np.inf
    return image, labels


CASES = {
    "shape": (lambda: (_pair()[0], _pair()[1][:30]), ValueError, r"shape"),
    "no labelled pixel": (lambda: (_pair()[0], np.zeros((40, 50), np.uint8)), ValueError, r"stroke|labelled"),
    "single class": (
        lambda: (_pair()[0], np.where(_pair()[1] > 0, 1, 0).astype(np.uint8)),
        ValueError,
        r"two classes",
    ),
    "negative labels": (_negative_labels, ValueError, r">= 0"),
    "float labels": (_float_labels, TypeError, r"integer"),
    "nan": (_nan_image, ValueError, r"NaN"),
    "inf": (_inf_image, ValueError, r"inf"),
    "empty": (lambda: (np.zeros((0, 5), np.float32), np.zeros((0, 5), np.uint8)), ValueError, r"empty"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_training_input_is_rejected_clearly_and_left_untouched(case):
    make, error, message = CASES[case]
    image, labels = make()
    image_before, labels_before = image.copy(), labels.copy()
    with pytest.raises(error, match=message):
        Trainer(image, labels, fast_config())
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(labels, labels_before)


def test_training_never_modifies_the_inputs():
    image, labels = _pair()
    labels_before = labels.copy()
    trainer = Trainer(image, labels, fast_config(iterations=2, augmentation={}))
    image[:] = 0  # editing the layer mid-run must not change the job either
    for _ in trainer.run():
        pass
    np.testing.assert_array_equal(labels, labels_before)
    patches, _ = trainer.data.sampler.sample(2)  # the run kept its own copy of the image
    assert patches.std() > 0


def test_mismatched_pairs_and_channels():
    image, labels = _pair()
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        Trainer([image, image], [labels], fast_config())
    rgb = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="same number of channels"):
        Trainer([image, rgb], [labels, labels], fast_config())
