from __future__ import annotations

import numpy as np
import pytest

from napari_deepseg.data import PatchSampler, validation_crops, validation_masks


def _stroke_image(size: int = 400) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    image = rng.random((2, size, size)).astype(np.float32)
    labels = np.zeros((size, size), np.int64)
    labels[size * 3 // 4, 40:46] = 1  # two tiny strokes in a big image
    labels[size // 8 : size // 8 + 3, size - 50] = 2
    return [image], [labels]


def _fraction_labelled(sampler: PatchSampler, draws: int = 200) -> float:
    _, labels = sampler.sample(draws)
    return float(np.mean(labels.reshape(draws, -1).max(axis=1) > 0))


def test_labelled_fraction_is_respected() -> None:
    images, labels = _stroke_image()
    for fraction, low, high in ((1.0, 1.0, 1.0), (0.5, 0.42, 0.62), (0.0, 0.0, 0.05)):
        sampler = PatchSampler(
            images, labels, patch_size=32, labelled_fraction=fraction, rng=np.random.default_rng(1)
        )
        assert low <= _fraction_labelled(sampler) <= high, fraction


def test_shapes_dtypes_and_content() -> None:
    images, labels = _stroke_image(100)
    sampler = PatchSampler(images, labels, patch_size=32, labelled_fraction=0.5, rng=np.random.default_rng(2))
    x, y = sampler.sample(5)
    assert x.shape == (5, 2, 32, 32) and x.dtype == np.float32
    assert y.shape == (5, 32, 32) and y.dtype == np.int64
    # Every patch is a real crop of the image: find it by its top-left value.
    for patch in x:
        top, left = np.argwhere(images[0][0] == patch[0, 0, 0])[0]
        np.testing.assert_array_equal(patch, images[0][:, top : top + 32, left : left + 32])


def test_class_balanced_centres() -> None:
    image = np.zeros((1, 300, 300), np.float32)
    labels = np.zeros((300, 300), np.int64)
    labels[:, :100] = 1  # a huge class 1 ...
    labels[250, 250] = 2  # ... and one pixel of class 2

    def share_with_class_2(balanced: bool) -> float:
        sampler = PatchSampler(
            [image],
            [labels],
            patch_size=32,
            labelled_fraction=1.0,
            rng=np.random.default_rng(3),
            class_balanced_centres=balanced,
        )
        _, y = sampler.sample(200)
        return float(np.mean((y == 2).reshape(200, -1).any(axis=1)))

    assert 0.4 <= share_with_class_2(True) <= 0.6
    assert share_with_class_2(False) < 0.02


def test_deterministic_for_a_seed() -> None:
    images, labels = _stroke_image(120)

    def draw(seed: int) -> tuple[np.ndarray, np.ndarray]:
        sampler = PatchSampler(
            images, labels, patch_size=32, labelled_fraction=0.7, rng=np.random.default_rng(seed)
        )
        return sampler.sample(8)

    a, b, c = draw(5), draw(5), draw(6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_small_images_are_padded_without_labels() -> None:
    image = np.arange(120, dtype=np.float32).reshape(1, 10, 12)
    labels = np.zeros((10, 12), np.int64)
    labels[0, 0], labels[9, 11] = 1, 2
    tiny = np.ones((1, 1, 3), np.float32)  # too small to reflect vertically: zero padding
    tiny_labels = np.array([[0, 3, 0]], np.int64)
    sampler = PatchSampler(
        [image, tiny],
        [labels, tiny_labels],
        patch_size=32,
        labelled_fraction=1.0,
        rng=np.random.default_rng(0),
    )
    x, y = sampler.sample(40)
    assert x.shape == (40, 1, 32, 32)
    for patch, lab in zip(x, y):
        if (lab == 3).any():
            assert lab.sum() == 3  # one label pixel
            assert (patch[0, 15] == 1).all() and patch.sum() == 32.0  # reflected along x, zeros along y
        else:
            assert sorted(lab[lab > 0].tolist()) == [1, 2]  # labels not reflected into the padding
            np.testing.assert_array_equal(patch[0, 11:21, 10:22], image[0])  # centred original
            np.testing.assert_array_equal(patch[0, 10, 10:22], image[0, 1])  # reflected row
            np.testing.assert_array_equal(patch[0, 0, 10:22], image[0, 7])  # reflected twice
    assert {int(v) for v in np.unique(y)} == {0, 1, 2, 3}


def _dense_labels(size: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(1, 3, size=(size, size)) * (rng.random((size, size)) < 0.1)
    return labels.astype(np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_split(seed: int) -> None:
    labels = [_dense_labels(seed=seed), _dense_labels(seed=seed + 10)]
    copies = [lab.copy() for lab in labels]
    masks = validation_masks(labels, [(0, 0), (1, 0)], fraction=0.25, seed=seed)
    for lab, copy in zip(labels, copies):
        np.testing.assert_array_equal(lab, copy)
    held = sum(int(m.sum()) for m in masks) / sum(int((lab > 0).sum()) for lab in labels)
    assert 0.05 <= held <= 0.5  # 32 blocks of 64 px, each held with probability 1/4
    for lab, mask in zip(labels, masks):
        assert not (mask & (lab == 0)).any()
        # Whole 64 x 64 blocks: a block is entirely held out or entirely kept.
        per_block = mask.reshape(4, 64, 4, 64).mean(axis=(1, 3))
        labelled = (lab > 0).reshape(4, 64, 4, 64).mean(axis=(1, 3))
        assert np.all((per_block == 0) | np.isclose(per_block, labelled))


def test_split_is_stable_while_painting() -> None:
    labels = _dense_labels(seed=0)
    labels[:, 128:] = 0  # only the left half painted at first
    before = validation_masks([labels], [(0, 0)], fraction=0.3, seed=4)[0]
    more = _dense_labels(seed=0)  # then the right half too
    after = validation_masks([more], [(0, 0)], fraction=0.3, seed=4)[0]
    np.testing.assert_array_equal(after[:, :128], before[:, :128])  # nothing already split moved
    assert after[:, 128:].any() and (~after[:, 128:] & (more[:, 128:] > 0)).any()
    other_seed = validation_masks([more], [(0, 0)], fraction=0.3, seed=5)[0]
    assert not np.array_equal(other_seed, after)


def test_block_split_keeps_every_class_in_training() -> None:
    labels = _dense_labels(128)
    labels[labels == 2] = 1
    labels[70:72, 70:72] = 2  # class 2 lives in one block only
    for seed in range(8):
        mask = validation_masks([labels], [(0, 0)], fraction=0.5, seed=seed)[0]
        assert ((labels == 2) & ~mask).sum() == 4


def test_no_validation_when_too_few_labels_or_fraction_zero() -> None:
    labels = np.zeros((128, 128), np.int64)
    labels[10, :100], labels[100, :50] = 1, 2  # 150 labelled pixels < 200
    assert not validation_masks([labels], [(0, 0)], fraction=0.3, seed=0)[0].any()
    assert not validation_masks([_dense_labels()], [(0, 0)], fraction=0.0, seed=0)[0].any()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        validation_masks([labels], [(0, 0)], fraction=1.0, seed=0)


def test_validation_crops_cover_strokes() -> None:
    labels = np.zeros((200, 300), np.int64)
    labels[10, 5:40] = 1  # 35 px
    labels[150:170, 250] = 2  # 20 px
    labels[100, 120:130] = 1  # 10 px
    image = np.random.default_rng(0).random((3, 200, 300)).astype(np.float32)
    small_labels = np.zeros((20, 20), np.int64)
    small_labels[5, 5:8] = 2
    crops = validation_crops([image, np.ones((3, 20, 20), np.float32)], [labels, small_labels], patch_size=64)
    assert [int((lab > 0).sum()) for _, lab in crops] == [35, 20, 10, 3]  # most labels first
    for x, lab in crops:
        assert x.shape == (3, 64, 64) and lab.shape == (64, 64)
    assert crops[-1][0][:, 22:42, 22:42].min() == 1.0  # the small slice, centred in its padding
    few = validation_crops([image], [labels], patch_size=64, max_crops=2)
    assert [int((lab > 0).sum()) for _, lab in few] == [35, 20]
    # Crops are deterministic.
    again = validation_crops([image], [labels], patch_size=64)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(crops, again))
