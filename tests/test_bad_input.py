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


# ---------------------------------------------------------------- beside the property-based tests
# (tests/test_fuzz_*.py): inputs with one exact expectation each.


@pytest.fixture(scope="module")
def model():
    image, labels = _pair()
    trainer = Trainer(
        image, labels, fast_config(iterations=1, patch_size=32, batch_size=1, encoder="resnet18")
    )
    list(trainer.run())
    return trainer.model


PREDICT_CASES = {
    "options of the wrong type": (dict(options="fast"), TypeError, r"options must be PredictionOptions"),
    "unknown keyword": (dict(tile_sise=64), TypeError, r"unknown prediction option\(s\) tile_sise"),
    "device meta": (dict(device="meta"), ValueError, r"device must be 'auto', 'cpu'.*'meta'"),
    "device number": (dict(device=3), ValueError, r"device must be .*got 3"),
    "float channel axis": (dict(channel_axis=2.0), TypeError, r"channel_axis must be an integer"),
    "bool channel axis": (dict(channel_axis=True), TypeError, r"channel_axis must be an integer"),
    "channel axis on 2D": (dict(channel_axis=0), ValueError, r"no room for a channel axis"),
    "out is a list": (dict(out=[[0] * 50] * 40), TypeError, r"out must be an array"),
    "out is read-only": (dict(out=np.zeros((40, 50), np.uint8)), ValueError, r"out is read-only"),
    "out of floats": (dict(out=np.zeros((40, 50), np.float32)), TypeError, r"out must be an integer array"),
    "out of another shape": (dict(out=np.zeros((4, 5), np.uint8)), ValueError, r"out has shape \(4, 5\)"),
    "min_probability NaN": (dict(min_probability=float("nan")), ValueError, r"min_probability must be in"),
    "min_probability str": (dict(min_probability="0.5"), TypeError, r"min_probability must be a number"),
}


@pytest.mark.parametrize("case", PREDICT_CASES)
def test_bad_prediction_arguments_are_named(model, case):
    keywords, error, message = PREDICT_CASES[case]
    image = _pair()[0]
    if case == "out is read-only":
        keywords["out"].flags.writeable = False
    before = image.copy()
    with pytest.raises(error, match=message):
        model.predict(image, **keywords)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ((0, 10), r"four finite numbers"),
        ((0, float("nan"), 0, 10), r"four finite numbers"),
        ("0,10,0,10", r"four finite numbers"),
        ((100, 110, 0, 10), r"does not overlap the image of size 40 x 50"),
    ],
)
def test_a_bad_region_is_named(model, region, message):
    with pytest.raises(ValueError, match=message):
        model.predict_compact(_pair()[0], region=region)


def test_extreme_float_images_give_finite_probabilities(model):
    """float32 no-data sentinels (-3.4e38), float64 intensities beyond float32, a subnormal range
    and a 2**60 constant used to overflow float32 in the normalisation: NaN losses and maps."""
    image = _pair()[0]
    for odd in (
        np.where(image > 0.9, np.float32(-3.4e38), image),
        image.astype(np.float64) * 1e300,
        (image.astype(np.float64) * 1e-40).astype(np.float32),
        np.full((40, 50), 2**60, np.int64),
    ):
        probabilities = model.predict_proba(odd)
        assert probabilities.shape == (2, 40, 50) and np.isfinite(probabilities).all()
        labels = _pair()[1]
        trainer = Trainer(
            odd, labels, fast_config(iterations=1, patch_size=32, batch_size=1, encoder="resnet18")
        )
        (record,) = list(trainer.run())
        assert np.isfinite(record.loss)


def test_nan_is_refused_in_dataset_mode_too():
    image, labels = _pair()
    trainer = Trainer(image, labels, fast_config(iterations=1, patch_size=32, normalisation="dataset"))
    bad = image.copy()
    bad[7, 7] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite"):  # was: probabilities all NaN, labels all 1
        trainer.model.predict_proba(bad)


def test_bad_live_labels_are_refused_and_the_run_keeps_its_own():
    image, labels = _pair()
    trainer = Trainer(image, labels, fast_config(iterations=1, patch_size=32))
    cases = [
        (labels[:30], ValueError, r"must keep the shape \(40, 50\)"),
        (labels.astype(np.float32), TypeError, r"labels must be integers"),
        (labels.astype(np.int8) - 1, ValueError, r"labels must be >= 0"),
        (np.where(labels == 2, 3, labels), ValueError, r"class 3 was not painted when training started"),
        (np.where(labels == 2, 5000, labels.astype(np.uint16)), ValueError, r"at most 1000 classes"),
        (labels * 0, ValueError, r"no painted pixel"),
    ]
    for new, error, message in cases:
        before = new.copy()
        with pytest.raises(error, match=message):
            trainer.update_labels(new)
        np.testing.assert_array_equal(new, before)
    with pytest.raises(ValueError, match=r"pair must be an index in 0..0"):
        trainer.update_labels(labels, pair=1)
    assert trainer.painted_pixels == (int((labels == 1).sum()), int((labels == 2).sum()))


def test_continuing_a_model_with_a_class_it_does_not_know(model):
    image, labels = _pair()
    with pytest.raises(ValueError, match=r"labels contain class 3 but the model knows 2 classes"):
        Trainer(image, np.where(labels == 2, 3, labels), fast_config(iterations=1), model=model)
    with pytest.raises(ValueError, match=r"3 class names given but the labels have 2 classes"):
        Trainer(image, labels, fast_config(iterations=1), class_names=["a", "b", "c"])


def test_data_functions_name_their_bad_arguments():
    from napari_deepseg.data.layout import to_slices
    from napari_deepseg.data.normalisation import Normalisation, compute_normalisation

    with pytest.raises(ValueError, match=r"need at least one image slice"):
        compute_normalisation([])
    with pytest.raises(ValueError, match=r"0 <= low_percentile < high_percentile <= 100"):
        compute_normalisation([np.zeros((1, 4, 4))], low_percentile=50, high_percentile=50)
    with pytest.raises(ValueError, match=r"same number of channels"):
        compute_normalisation([np.zeros((1, 4, 4)), np.zeros((2, 4, 4))])
    with pytest.raises(ValueError, match=r"bounds must be finite"):
        Normalisation(low=(float("nan"),), high=(1.0,))
    with pytest.raises(ValueError, match=r"one value per channel"):
        Normalisation(low=(0.0, 1.0), high=(1.0,))
    with pytest.raises(ValueError, match=r"expected \(C, H, W\) or \(N, C, H, W\) with C = 1"):
        Normalisation(low=(0.0,), high=(1.0,)).apply(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"the image is empty \(shape \(3, 0, 4\)\)"):
        to_slices(np.zeros((3, 0, 4)))
    with pytest.raises(ValueError, match=r"expects 2 channels but channel axis 0"):
        to_slices(np.zeros((3, 4, 4)), channel_axis=0, in_channels=2)


def test_image_files_that_cannot_be_written_are_named(tmp_path):
    from napari_deepseg.image_io import read_image, write_image

    with pytest.raises(ValueError, match=r"PNG output holds 2D 8/16-bit labels only"):
        write_image(tmp_path / "x.png", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"unsupported output format '.bmp'"):
        write_image(tmp_path / "x.bmp", np.zeros((4, 4), np.uint8))
    with pytest.raises(IsADirectoryError, match=r"is a directory, not an image file"):
        read_image(tmp_path)
    (tmp_path / "bad.png").write_text("hello")
    with pytest.raises(ValueError, match=r"cannot read image") as info:
        read_image(tmp_path / "bad.png")
    assert "\n" not in str(info.value)  # imageio's plugin suggestions are dropped


def test_a_one_pixel_image_predicts_and_cannot_train_on_one_class(model):
    assert model.predict(np.ones((1, 1), np.float32)).shape == (1, 1)
    with pytest.raises(ValueError, match=r"only class 1 is painted"):
        Trainer(np.ones((1, 1), np.float32), np.ones((1, 1), np.uint8), fast_config())


def test_a_nan_between_the_sampled_pixels_is_still_refused(model):
    # 2,250,000 pixels: the normalisation samples every second one; (1, 1) is not among them.
    image = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)
    image[1, 1] = np.nan
    for predict in (model.predict, model.predict_compact, model.predict_proba):
        with pytest.raises(ValueError, match="contains NaN or infinite values"):
            predict(image)
    assert np.isnan(image[1, 1]) and np.isfinite(np.delete(image.ravel(), 1501)).all()  # untouched
