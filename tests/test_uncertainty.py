import numpy as np
import pytest

from napari_deepseg import CompactProbabilities, suggest_next_region, uncertainty


def test_zero_for_one_hot_one_for_uniform():
    onehot = np.zeros((3, 4, 5), np.float32)
    onehot[1] = 1
    u = uncertainty(onehot)
    assert u.shape == (4, 5) and u.dtype == np.float32 and np.all(u == 0)
    uniform = np.full((3, 4, 5), 1 / 3, np.float64)
    np.testing.assert_allclose(uncertainty(uniform), 1.0, atol=1e-6)
    two = np.stack([np.full((2, 2), 0.75), np.full((2, 2), 0.25)])
    np.testing.assert_allclose(uncertainty(two), 0.5)  # (1 - 0.75) * 2 / 1
    np.testing.assert_array_equal(uncertainty(np.ones((1, 3, 3))), 0.0)  # a single class is certain


def test_the_same_on_compact_probabilities():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=(30, 20)).transpose(2, 0, 1).astype(np.float32)
    compact = CompactProbabilities.from_probabilities(p)
    u = uncertainty(compact)
    assert u.shape == (30, 20) and u.dtype == np.float32
    np.testing.assert_allclose(u, uncertainty(p), atol=4 / 3 / 255 + 1e-6)  # the 1/255 quantisation
    with pytest.raises(TypeError, match="floating"):
        uncertainty(np.ones((2, 3, 3), np.uint8))


def test_where_next_avoids_strokes_and_finds_the_most_uncertain_region():
    u = np.zeros((200, 300), np.float32)
    u[20:60, 30:70] = 0.9  # the most uncertain region, but painted already
    u[120:180, 200:260] = 0.3
    labels = np.zeros((200, 300), np.uint8)
    labels[40, 40:50] = 1
    y, x = suggest_next_region(u, labels, window=64)
    assert 120 <= y < 180 and 200 <= x < 260 and labels[y, x] == 0
    assert suggest_next_region(u, None, window=64)[0] < 70  # without strokes: the top region
    assert suggest_next_region(u, np.ones_like(labels), window=64) is None
    with pytest.raises(ValueError, match="do not match"):
        suggest_next_region(u, labels[:10])
