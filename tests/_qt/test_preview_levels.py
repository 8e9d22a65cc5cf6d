"""The Train widget's preview and uncertainty layers of a multiscale image trained on level 1: they
lie over the image as napari shows that level (scaled by its downsample factor, not in level-0
pixels), and the region the worker previews is the visible one in that level's pixels."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_deepseg._qt import layers as layer_io
from napari_deepseg._qt._preview_job import PreviewSettings
from napari_deepseg._qt._train_preview import TrainPreview
from napari_deepseg._qt._uncertainty import show_uncertainty, uncertainty_key

from .conftest import TIMEOUT

SCALE, TRANSLATE = (0.5, 0.5), (3.0, 4.0)


def _pyramid(viewer, image):
    return viewer.add_image(
        [image.data, image.data[::2, ::2]], multiscale=True, name="pyramid", scale=SCALE, translate=TRANSLATE
    )


def _assert_over_level_1(layer, pyramid):
    assert layer.data.shape == (128, 128)
    np.testing.assert_allclose(layer.scale, (1.0, 1.0))  # 0.5 x the downsample factor 2
    np.testing.assert_allclose(layer.translate, TRANSLATE)
    # Pixel (10, 20) of level 1 lies where pixel (20, 40) of level 0 lies.
    np.testing.assert_allclose(layer.data_to_world((10, 20)), pyramid.data_to_world((20, 40)))


def test_preview_and_uncertainty_of_level_1_lie_over_level_1(trainer_setup, qtbot, errors):
    viewer, widget, image, labels = trainer_setup
    pyramid = _pyramid(viewer, image)
    small = viewer.add_labels(
        labels.data[::2, ::2], name="strokes level 1", scale=(1.0, 1.0), translate=TRANSLATE
    )
    widget.set_pairs([(pyramid, small)])
    widget.set_config(iterations=2, preview=True)
    widget.uncertainty_checkbox.setChecked(True)
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT):
        widget.start_button.click()
    assert errors == []
    preview = viewer.layers["pyramid preview"]
    uncertainty = viewer.layers[uncertainty_key(pyramid)]
    assert isinstance(preview, Labels) and isinstance(uncertainty, Image)
    for layer in (preview, uncertainty):
        _assert_over_level_1(layer, pyramid)
    assert set(np.unique(preview.data)) <= {1, 2} and float(uncertainty.data.max()) > 0


def test_a_plain_image_keeps_its_own_scale_and_a_reused_layer_moves_to_the_new_level(make_napari_viewer):
    viewer = make_napari_viewer()
    plain = viewer.add_image(np.zeros((64, 64), np.float32), name="plain", scale=(2.0, 3.0), translate=(1, 2))
    layer = show_uncertainty(viewer, plain, np.zeros((64, 64), np.float32))
    np.testing.assert_allclose(layer.scale, (2.0, 3.0))
    np.testing.assert_allclose(layer.translate, (1, 2))
    # The same image as a pyramid: its level-1 uncertainty reuses the layer, scaled by 2.
    pyramid = viewer.add_image(
        [np.zeros((64, 64), np.float32), np.zeros((32, 32), np.float32)], multiscale=True, name="pyramid"
    )
    first = show_uncertainty(viewer, pyramid, np.zeros((64, 64), np.float32))
    np.testing.assert_allclose(first.scale, (1.0, 1.0))
    again = show_uncertainty(viewer, pyramid, np.ones((32, 32), np.float32))
    assert again is first
    np.testing.assert_allclose(again.scale, (2.0, 2.0))


@pytest.mark.parametrize("level", [0, 1])
def test_the_previewed_region_is_the_visible_part_in_the_level_s_pixels(make_napari_viewer, level):
    viewer = make_napari_viewer()
    data = np.zeros((256, 256), np.float32)
    pyramid = viewer.add_image([data, data[::2, ::2]], multiscale=True, name="pyramid", scale=SCALE)
    copy = layer_io.copy_image(pyramid, labels_shape=(256 >> level, 256 >> level))
    assert copy.data.shape == (256 >> level,) * 2
    strokes = viewer.add_labels(np.zeros(copy.data.shape, np.uint8), name="strokes")
    preview = TrainPreview(viewer, _checkbox())
    settings = PreviewSettings(copy)
    preview.begin(settings, pyramid, strokes, 2)
    camera = layer_io.camera(viewer)
    # The canvas (height, width) at zoom z shows (height / z, width / z) world units around the
    # centre: world (32, 32) is level-0 pixel (64, 64), level-1 pixel (32, 32).
    camera.center = (32.0, 32.0)
    camera.zoom = 1000.0 / 0.5  # a few level-0 pixels around the centre
    y0, y1, x0, x1 = settings.region
    centre = 64 >> level
    assert y0 <= centre < y1 and x0 <= centre < x1
    assert y1 - y0 <= 8 and x1 - x0 <= 8  # a handful of pixels, not the whole plane
    camera.center = (100.0, 100.0)  # level-0 pixel (200, 200): level-1 pixel (100, 100)
    y0, y1, x0, x1 = settings.region
    centre = 200 >> level
    assert y0 <= centre < y1 and x0 <= centre < x1 and y1 <= (256 >> level) + 8
    preview.end()


def _checkbox():
    from qtpy.QtWidgets import QCheckBox

    box = QCheckBox()
    box.setChecked(False)  # no layers: only the region is under test
    return box
