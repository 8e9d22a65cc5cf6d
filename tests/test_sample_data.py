import numpy as np
import pytest

from napari_deepseg import sample_data
from napari_deepseg.data.strokes import simulate_strokes


@pytest.mark.parametrize("sample, shape", [("fluorescence", (256, 256)), ("he", (256, 320, 3))])
def test_samples_have_sparse_strokes_that_agree_with_the_ground_truth(sample, shape):
    image, strokes = sample_data.load_sample(sample)
    mask = sample_data.load_sample_mask(sample)
    assert image.shape == shape and image.dtype == np.uint8
    assert strokes.shape == shape[:2] and mask.shape == shape[:2]
    assert set(np.unique(strokes)) == {0, 1, 2}
    assert 0.005 < (strokes > 0).mean() < 0.03
    assert mask[strokes == 2].all() and not mask[strokes == 1].any()


def test_npe2_sample_functions_return_image_and_labels():
    for layers in (sample_data.fluorescence_sample_layers(), sample_data.he_sample_layers()):
        (image, image_meta, image_kind), (labels, _, labels_kind) = layers
        assert (image_kind, labels_kind) == ("image", "labels")
        assert labels.shape == image.shape[:2]
    assert sample_data.he_sample_layers()[0][1]["rgb"] is True


def test_stroke_simulation_is_seeded_and_stays_off_boundaries():
    from scipy import ndimage

    mask = np.zeros((128, 128), bool)
    mask[30:90, 20:100] = True
    a = simulate_strokes(mask, rng=np.random.default_rng(5))
    b = simulate_strokes(mask, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    distance_to_other_class = np.where(
        mask, ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask)
    )
    assert distance_to_other_class[a > 0].min() > 3
    assert 0.005 < (a > 0).mean() < 0.02
    with pytest.raises(ValueError, match="unknown sample"):
        sample_data.load_sample("nope")
