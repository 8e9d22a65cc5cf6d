"""Prediction that runs out of memory: one retry with smaller tiles, else a message that says
what to lower. The device's memory is a test double: a network that refuses large batches."""

import warnings

import numpy as np
import pytest
import torch

from napari_deepseg import SegmentationModel
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.errors import DeviceOutOfMemoryError
from napari_deepseg.models import build_model
from napari_deepseg.tiling import TilingOptions, smaller_tiling

CUDA_OOM = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB (GPU 0; 7.79 GiB total)")
MPS_OOM = RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB, other allocations: 1.2 GB)")
IMAGE = np.random.default_rng(0).random((200, 300)).astype(np.float32)


@pytest.fixture(autouse=True)
def _run_the_module_itself(monkeypatch):
    """The memory double counts passes on itself; a BatchNorm-folded copy would count its own."""
    from napari_deepseg import prediction

    monkeypatch.setattr(prediction, "inference_network", lambda module: module)


class _LimitedMemory(torch.nn.Module):
    """``net`` on a device that holds at most ``max_pixels`` input pixels per forward pass."""

    def __init__(self, net: torch.nn.Module, max_pixels: float, error: Exception = CUDA_OOM) -> None:
        super().__init__()
        self.net, self.max_pixels, self.error = net, max_pixels, error
        self.passes: list[tuple[int, int, int]] = []  # (batch, height, width) of every pass
        self.refused = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.append((x.shape[0], x.shape[2], x.shape[3]))
        if x.shape[0] * x.shape[2] * x.shape[3] > self.max_pixels:
            self.refused += 1
            raise self.error
        return self.net(x)


def _local_net() -> torch.nn.Module:
    """A 3x3 receptive field: tiles whose overlap exceeds it give the whole-image result."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 3, 1))


def _model(module: torch.nn.Module) -> SegmentationModel:
    return SegmentationModel(
        module,
        architecture="unet",
        encoder="resnet18",
        num_classes=3,
        normalisation=Normalisation((0.0,), (1.0,)),
    )


def _untiled(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(Normalisation((0.0,), (1.0,)).apply(image[None]))[None]
    with torch.inference_mode():
        return net(x).softmax(1)[0].numpy()


@pytest.mark.parametrize("error", [CUDA_OOM, MPS_OOM], ids=["cuda", "mps"])
def test_out_of_memory_retries_once_with_smaller_tiles_and_matches_the_untiled_result(error):
    net = _local_net()
    limited = _LimitedMemory(net, max_pixels=128 * 128, error=error)
    with pytest.warns(
        RuntimeWarning, match=r"300 pixels \(.*out of memory.*\); predicting again with tiles of 128"
    ):
        probabilities = _model(limited).predict_proba(IMAGE, precision="fp32")  # one 200 x 300 tile first
    assert limited.refused == 1 and limited.passes[0] == (1, 200, 300)
    assert {p[1:] for p in limited.passes[1:]} <= {(128, 128)} and len(limited.passes) == 1 + 2 * 3
    np.testing.assert_allclose(probabilities, _untiled(net, IMAGE), atol=1e-5)
    # The compact and the labels paths retry alike.
    with pytest.warns(RuntimeWarning):
        labels = _model(_LimitedMemory(net, 128 * 128)).predict(IMAGE, precision="fp32")
    np.testing.assert_array_equal(labels, _untiled(net, IMAGE).argmax(0) + 1)
    with pytest.warns(RuntimeWarning):
        compact = _model(_LimitedMemory(net, 128 * 128)).predict_compact(IMAGE, precision="fp32")
    np.testing.assert_array_equal(compact.best_class, labels)


def test_the_retry_of_a_unet_is_the_prediction_with_the_smaller_tiling():
    torch.manual_seed(0)
    unet = build_model("unet", num_classes=3, in_channels=1, encoder="resnet18").eval()
    options = dict(tile_size=256, overlap=64, batch_size=2, precision="fp32")
    limited = _LimitedMemory(unet, max_pixels=128 * 128)
    # Tiles of 200 x 192 in pairs, then 96-pixel tiles (half of 200, in steps of 32), one at a time.
    with pytest.warns(
        RuntimeWarning, match="tiles of 200 pixels .*; predicting again with tiles of 96, one per pass"
    ):
        retried = _model(limited).predict_proba(IMAGE, **options)
    expected = _model(unet).predict_proba(IMAGE, tile_size=96, overlap=24, batch_size=1, precision="fp32")
    np.testing.assert_array_equal(retried, expected)
    assert limited.refused == 1


def test_a_failed_retry_says_what_to_lower():
    limited = _LimitedMemory(_local_net(), max_pixels=64 * 64)
    with warnings.catch_warnings(), pytest.raises(DeviceOutOfMemoryError) as caught:
        warnings.simplefilter("ignore", RuntimeWarning)
        _model(limited).predict_compact(IMAGE)
    message = str(caught.value)
    assert message.startswith(
        "out of memory on cpu predicting 200 x 300 pixels with tiles of 300 pixels and again with 128: "
        "lower the tile size (tile_size, --tile-size) or predict a smaller image or crop"
    )
    assert message.endswith("(CUDA out of memory. Tried to allocate 3.00 GiB (GPU 0; 7.79 GiB total))")
    assert limited.refused == 2  # the first try and a single retry, each at its first tile
    assert isinstance(caught.value, RuntimeError)  # what the Train widget's job catches


def test_no_smaller_tiles_fails_at_once():
    limited = _LimitedMemory(_local_net(), max_pixels=0)
    with pytest.raises(
        DeviceOutOfMemoryError, match="32 pixels, the smallest: predict a smaller image or crop"
    ):
        _model(limited).predict(IMAGE[:32, :32], tile_size=32, overlap=0)
    assert limited.refused == 1


def test_other_errors_are_not_retried():
    limited = _LimitedMemory(_local_net(), max_pixels=0, error=ValueError("a bug"))
    with pytest.raises(ValueError, match="^a bug$"):
        _model(limited).predict(IMAGE)
    assert len(limited.passes) == 1


@pytest.mark.parametrize(
    ("tiling", "shape", "expected"),
    [
        (TilingOptions(1024, 128, 1), (4096, 4096), TilingOptions(448, 112, 1)),  # tiles used: 928
        (TilingOptions(1024, 128, 4), (200, 300), TilingOptions(128, 32, 1)),  # the tile used: 300
        (TilingOptions(256, 64, 1), (1000, 40), TilingOptions(128, 32, 1)),
        (TilingOptions(32, 16, 4), (500, 500), TilingOptions(32, 16, 1)),  # only the batch can shrink
        (TilingOptions(32, 16, 1), (500, 500), None),
        (TilingOptions(1024, 128, 1), (40, 50), TilingOptions(32, 8, 1)),
    ],
)
def test_the_smaller_tiling(tiling, shape, expected):
    assert smaller_tiling(tiling, *shape) == expected
