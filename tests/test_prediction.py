import copy

import numpy as np
import pytest
import torch

from napari_deepseg import CompactProbabilities, apply_threshold
from napari_deepseg.config import Precision
from napari_deepseg.data.layout import to_slices
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.models import build_model
from napari_deepseg.prediction import PredictionOptions, predict_compact, predict_probabilities
from napari_deepseg.segmentation_model import SegmentationModel
from napari_deepseg.tiling import TilingOptions, blend_weights, tile_layout


def _probs(values) -> np.ndarray:
    """(K, N) probabilities from rows of per-pixel class probabilities."""
    return np.asarray(values, dtype=np.float32).T.reshape(len(values[0]), 1, len(values))


def test_threshold_zero_classifies_every_pixel_with_its_most_probable_class():
    p = _probs([[0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    np.testing.assert_array_equal(apply_threshold(p, 0.0), [[1, 3, 2]])


def test_threshold_between_leaves_uncertain_pixels_unclassified():
    # The seeds' example: 40 % / 35 % / 25 % is unclassified at 50 % and class A at 39 %.
    p = _probs([[0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    np.testing.assert_array_equal(apply_threshold(p, 0.5), [[0, 3, 2]])
    np.testing.assert_array_equal(apply_threshold(p, 0.39), [[1, 3, 2]])
    np.testing.assert_array_equal(apply_threshold(p, 0.8), [[0, 3, 0]])  # >= is inclusive


def test_threshold_one_keeps_only_certain_pixels():
    p = _probs([[1.0, 0.0], [0.999, 0.001], [0.0, 1.0]])
    np.testing.assert_array_equal(apply_threshold(p, 1.0), [[1, 0, 2]])


def test_ties_go_to_the_lower_class():
    p = _probs([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4]])
    np.testing.assert_array_equal(apply_threshold(p, 0.0), [[1, 2]])
    np.testing.assert_array_equal(apply_threshold(CompactProbabilities.from_probabilities(p), 0.0), [[1, 2]])


def test_single_class_and_five_classes():
    one = np.ones((1, 4, 5), np.float32)
    assert (apply_threshold(one, 0.0) == 1).all() and (apply_threshold(one, 1.0) == 1).all()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 30, 40))
    p = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    labels = apply_threshold(p, 0.0)
    np.testing.assert_array_equal(labels, p.argmax(0) + 1)
    assert set(np.unique(labels)) <= {1, 2, 3, 4, 5}
    high = apply_threshold(p, 0.6)
    np.testing.assert_array_equal(high == 0, p.max(0) < 0.6)


def test_compact_result_thresholds_like_the_float_one_at_its_resolution():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 64, 64)) * 2
    p = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    compact = CompactProbabilities.from_probabilities(p)
    for t in (0.0, 0.3, 0.5, 0.77, 1.0):
        exact = apply_threshold(p, t)
        fast = apply_threshold(compact, t)
        # Only pixels within one quantisation step of the threshold may differ.
        differ = exact != fast
        assert np.all(np.abs(p.max(0)[differ] - t) <= 1 / 255)
    np.testing.assert_array_equal(apply_threshold(compact, 0.0), p.argmax(0) + 1)


def test_threshold_rejects_bad_arguments():
    p = np.full((2, 3, 3), 0.5, np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apply_threshold(p, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apply_threshold(p, -0.1)
    with pytest.raises(TypeError, match="floating"):
        apply_threshold(np.ones((2, 3, 3), np.int64), 0.5)


def test_tiles_cover_the_image_and_stay_inside():
    for length, tile, overlap in [(100, 512, 64), (512, 512, 64), (1000, 256, 64), (1025, 256, 100)]:
        size, starts = tile_layout(length, tile, overlap)
        assert size <= tile
        covered = np.zeros(length, int)
        for s in starts:
            assert s >= 0 and s + size <= length
            covered[s : s + size] += 1
        assert covered.min() >= 1
        if len(starts) > 1:  # neighbours share at least the overlap
            assert min(b - a for a, b in zip(starts, starts[1:])) > 0
            assert max(b - a for a, b in zip(starts, starts[1:])) <= size - overlap


def test_blend_weights_give_every_pixel_some_weight():
    length, tile, overlap = 1000, 256, 96
    size, starts = tile_layout(length, tile, overlap)
    total = np.zeros(length)
    for i, s in enumerate(starts):
        total[s : s + size] += blend_weights(size, overlap, i == 0, i == len(starts) - 1)
    assert total.min() > 0.0


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", num_classes=3, in_channels=1).eval()


def test_tiled_equals_untiled_when_overlap_exceeds_the_receptive_field(unet):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(448, 416)).astype(np.float32)
    norm = Normalisation(low=(-2.0,), high=(2.0,))
    with torch.inference_mode():
        logits = unet(torch.from_numpy(norm.apply(image[None]))[None])
    untiled = logits.softmax(1)[0].numpy()
    # fp32: "auto" is bf16 on CPUs with AVX512-BF16 / AMX, and this compares tiling, not precision
    options = PredictionOptions(TilingOptions(tile_size=384, overlap=352, batch_size=2), precision="fp32")
    tiled = predict_probabilities(unet, to_slices(image), norm, 3, options)
    assert tiled.shape == (3, 448, 416) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, untiled, atol=1e-4)


def test_mirroring_averages_the_tile_and_its_three_mirror_images(unet):
    rng = np.random.default_rng(5)
    image = rng.normal(size=(128, 128)).astype(np.float32)
    norm = Normalisation(low=(-2.0,), high=(2.0,))
    options = PredictionOptions(TilingOptions(tile_size=128, overlap=32), precision="fp32")

    def probabilities(im: np.ndarray, mirroring: bool) -> np.ndarray:
        return predict_probabilities(
            unet, to_slices(np.ascontiguousarray(im)), norm, 3, options.replace(mirroring=mirroring)
        )

    mirrored = probabilities(image, True)
    views = [(), (1,), (0,), (0, 1)]  # image axes: none, left-right, up-down, both
    expected = np.mean(
        [np.flip(probabilities(np.flip(image, axes), False), [a + 1 for a in axes]) for axes in views], 0
    )
    np.testing.assert_allclose(mirrored, expected, atol=1e-5)
    np.testing.assert_allclose(mirrored.sum(0), 1.0, atol=1e-5)
    # The average is mirror-symmetric: a left-right mirrored image gets the mirrored result,
    # which the plain network (random weights, no symmetry) does not give.
    np.testing.assert_allclose(probabilities(image[:, ::-1], True), mirrored[:, :, ::-1], atol=1e-5)
    plain = probabilities(image, False)
    assert np.abs(probabilities(image[:, ::-1], False) - plain[:, :, ::-1]).max() > 1e-3


def test_compact_streamed_prediction_matches_full_probabilities(unet):
    rng = np.random.default_rng(1)
    stack = rng.normal(size=(2, 150, 170)).astype(np.float32)
    norm = Normalisation(low=(-2.0,), high=(2.0,))
    options = PredictionOptions(TilingOptions(tile_size=64, overlap=16, batch_size=3))
    full = predict_probabilities(unet, to_slices(stack), norm, 3, options)
    compact = predict_compact(unet, to_slices(stack), norm, 3, options)
    assert full.shape == (3, 2, 150, 170)
    np.testing.assert_allclose(full.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(compact.best_class, full.argmax(0) + 1)
    np.testing.assert_array_equal(compact.best_probability, np.rint(full.max(0) * 255))


def test_prediction_never_outputs_unlabelled_unless_thresholded(unet):
    model = SegmentationModel(
        unet,
        architecture="unet",
        encoder="vgg16_bn",
        num_classes=3,
        normalisation=Normalisation(low=(0.0,), high=(1.0,)),
    )
    image = np.random.default_rng(2).random((70, 90)).astype(np.float32)
    before = image.copy()
    labels = model.predict(image, tile_size=64, overlap=16, precision="fp32")
    assert labels.min() >= 1 and labels.max() <= 3
    np.testing.assert_array_equal(image, before)
    with pytest.raises(ValueError, match="1-channel images but this image looks like RGB"):
        model.predict_proba(np.zeros((70, 90, 3), np.float32))


def test_labels_streamed_into_a_memmap_equal_the_float_path(unet, tmp_path):
    model = SegmentationModel(
        unet,
        architecture="unet",
        encoder="vgg16_bn",
        num_classes=3,
        normalisation=Normalisation(low=(-2.0,), high=(2.0,)),
    )
    stack = np.random.default_rng(3).normal(size=(2, 150, 170)).astype(np.float32)
    options = dict(tile_size=64, overlap=16, batch_size=3, precision="fp32")
    probabilities = model.predict_proba(stack, **options)
    level = round(float(np.median(probabilities.max(0))), 4)  # an untrained net is near 1/3 everywhere
    expected = apply_threshold(probabilities, level)
    assert 0.3 < (expected == 0).mean() < 0.7  # the threshold matters here
    out = np.lib.format.open_memmap(tmp_path / "labels.npy", mode="w+", dtype=np.uint8, shape=stack.shape)
    returned = model.predict(stack, min_probability=level, out=out, **options)
    assert returned is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(model.predict(stack, min_probability=level, **options), expected)


def test_prediction_options_and_their_keyword_form(unet):
    base = PredictionOptions(precision="fp32")
    assert base.precision is Precision.FP32 and base.tiling == TilingOptions() and base.device is None
    changed = base.replace(tile_size=64, overlap=16, device="cpu")
    assert changed.tiling == TilingOptions(64, 16, 1) and changed.device == "cpu"
    assert changed.precision is Precision.FP32 and base.tiling.tile_size == 1024  # base unchanged
    with pytest.raises(TypeError, match=r"unknown prediction option\(s\) tilesize; known: tile_size"):
        base.replace(tilesize=64)
    with pytest.raises(ValueError, match="overlap must be in"):
        base.replace(tile_size=64, overlap=64)
    with pytest.raises(ValueError, match="precision must be one of 'auto', 'fp32', 'bf16', got 'fp16'"):
        PredictionOptions(precision="fp16")
    model = SegmentationModel(
        unet,
        architecture="unet",
        encoder="resnet18",  # the fixture's: the default encoder
        num_classes=3,
        normalisation=Normalisation(low=(0.0,), high=(1.0,)),
    )
    image = np.random.default_rng(4).random((100, 120)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    options = PredictionOptions(TilingOptions(64, 16), precision="fp32", progress=lambda *a: calls.append(a))
    np.testing.assert_array_equal(
        model.predict_proba(image, options),
        model.predict_proba(image, tile_size=64, overlap=16, precision="fp32"),
    )
    assert calls[-1] == (6, 6) and len(calls) == 6  # 2 x 3 tiles of at most 64 px
    np.testing.assert_array_equal(
        model.predict_compact(image, options, tile_size=1024).best_class,
        model.predict_compact(image, precision="fp32").best_class,
    )
    with pytest.raises(TypeError, match="unknown prediction option"):
        model.predict(image, tilesize=64)


def test_the_network_moves_only_when_asked(unet):
    model = SegmentationModel(
        unet,
        architecture="unet",
        encoder="resnet18",  # the fixture's: the default encoder
        num_classes=3,
        normalisation=Normalisation(low=(0.0,), high=(1.0,)),
    )
    assert model.to("cpu") is model and model.device == torch.device("cpu")
    # The functions below SegmentationModel never move a network: a mismatch is an error. (A
    # network on "meta", as no machine has a second device for sure: "meta" is no device to ask for.)
    elsewhere = copy.deepcopy(unet).to("meta")
    with pytest.raises(ValueError, match=r"the network is on meta, not cpu: move it first"):
        predict_compact(
            elsewhere,
            to_slices(np.zeros((40, 40), np.float32)),
            model.normalisation,
            3,
            PredictionOptions(device="cpu"),
        )
    assert model.device == torch.device("cpu") and next(elsewhere.parameters()).device.type == "meta"


def test_streamed_labels_reject_an_output_that_does_not_fit(unet):
    model = SegmentationModel(
        unet,
        architecture="unet",
        encoder="vgg16_bn",
        num_classes=3,
        normalisation=Normalisation(low=(0.0,), high=(1.0,)),
    )
    image = np.zeros((40, 50), np.float32)
    with pytest.raises(ValueError, match="shape"):
        model.predict(image, out=np.zeros((50, 40), np.uint8))
    with pytest.raises(TypeError, match="integer"):
        model.predict(image, out=np.zeros((40, 50), np.float32))


def test_tiles_shrink_to_spread_the_overlap_instead_of_recomputing_it():
    size, starts = tile_layout(4096, 1024, 128)
    assert len(starts) == 5 and size == 928  # 5 tiles of 1024 would compute 56 % extra, these 28 %
    assert starts[0] == 0 and starts[-1] + size == 4096


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN for CPU bf16")
def test_bf16_predictions_agree_with_fp32_on_a_trained_model(fluo_crop):
    from napari_deepseg import Trainer

    from .conftest import fast_config

    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=40, precision="bf16"))
    for _ in trainer.run():
        pass
    big = np.tile(image, (2, 2))  # several tiles, so blending runs in both precisions
    options = dict(tile_size=96, overlap=32)
    fp32 = trainer.model.predict(big, precision="fp32", **options)
    bf16 = trainer.model.predict(big, precision="bf16", **options)
    assert len(np.unique(fp32)) == 2  # a trained model, not a constant one
    assert (fp32 == bf16).mean() >= 0.99


def test_per_image_normalisation_predicts_the_same_on_brighter_and_darker_images(fluo_crop):
    from napari_deepseg import Trainer

    from .conftest import fast_config

    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=20))
    list(trainer.run())
    model = trainer.model
    assert model.normalisation.mode == "per_image"
    reference = model.predict(image, precision="fp32")
    for scale, offset in ((0.5, 0.0), (2.0, 0.0), (1.0, 30.0)):
        shifted = image.astype(np.float32) * scale + offset
        assert np.mean(model.predict(shifted, precision="fp32") == reference) >= 0.99
    # Dataset bounds remain available: there a darker image is seen as darker.
    dataset = Trainer(image, labels, fast_config(iterations=20, normalisation="dataset"))
    list(dataset.run())
    assert dataset.model.normalisation.mode == "dataset"
    assert dataset.model.normalisation.for_image(model.view(image).data) is dataset.model.normalisation


def test_a_region_is_predicted_like_the_whole_plane(fluo_crop):
    from napari_deepseg import Trainer

    from .conftest import fast_config

    image, labels = fluo_crop
    big = np.tile(image, (3, 3))
    trainer = Trainer(big, np.tile(labels, (3, 3)), fast_config(iterations=3))
    list(trainer.run())
    model = trainer.model
    whole = model.predict_compact(big, precision="fp32")
    region = (70, 130, 50, 150)
    part = model.predict_compact(big, region=region, precision="fp32")
    assert part.shape == (60, 100)
    # The network's receptive field exceeds the context around the region: near-equal, not equal.
    assert np.mean(part.best_class == whole.best_class[70:130, 50:150]) >= 0.97
    bounds = model.normalisation.for_image(model.view(big).data)
    again = model.predict_compact(big, region=region, image_normalisation=bounds, precision="fp32")
    np.testing.assert_array_equal(again.best_probability, part.best_probability)
    with pytest.raises(ValueError, match="does not overlap"):
        model.predict_compact(big, region=(500, 600, 0, 10))
