"""BatchNorm folding for inference: exact in float32, never touches the training module, follows
its weights, and refuses networks where a convolution's output is also used elsewhere."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_deepseg.models import build_model
from napari_deepseg.models._folding import fold_batch_norms, inference_network


def _with_statistics(module: nn.Module) -> nn.Module:
    module.train()
    with torch.no_grad():
        for _ in range(2):
            module(torch.randn(2, module_in_channels(module), 64, 64) * 3 + 1)
    return module.eval()


def module_in_channels(module: nn.Module) -> int:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d)).in_channels


def _batch_norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


@pytest.mark.parametrize(
    ("architecture", "encoder"),
    [("unet", "resnet18"), ("unet", "vgg16_bn"), ("deeplabv3plus", "resnet34"), ("fcn8s", "resnet50")],
)
def test_folded_network_equals_the_original_in_float32(architecture, encoder):
    module = _with_statistics(build_model(architecture, num_classes=3, in_channels=2, encoder=encoder))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    count = _batch_norms(module)
    folded = fold_batch_norms(module)
    assert count > 0 and _batch_norms(folded) == 0
    x = torch.randn(1, 2, 96, 80)
    with torch.no_grad():
        expected, got = module(x), folded(x)
    assert torch.allclose(got, expected, rtol=0, atol=1e-4 * expected.abs().max().item())
    # The training module is left as it was: same weights, its BatchNorms in place.
    assert _batch_norms(module) == count
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_the_prediction_copy_follows_the_training_weights():
    module = _with_statistics(build_model("unet", num_classes=2, in_channels=1, encoder="resnet18"))
    first = inference_network(module)
    assert first is not module and inference_network(module) is first  # cached
    optimiser = torch.optim.SGD(module.parameters(), lr=0.5)
    module.train()
    for _ in range(2):  # weights and running statistics both change
        optimiser.zero_grad()
        module(torch.randn(2, 1, 64, 64)).square().mean().backward()
        optimiser.step()
    module.eval()
    again = inference_network(module)
    assert again is first  # refreshed in place, not rebuilt
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(again(x), module(x), atol=1e-4)
    assert inference_network(module.train()) is module  # never in training mode


class _SharedConvOutput(nn.Module):
    """The convolution's output feeds the BatchNorm *and* a skip: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_convolution_whose_output_is_used_elsewhere_is_not_folded():
    module = _SharedConvOutput()
    with torch.no_grad():
        module.bn.running_mean.fill_(2.0)
        module.bn.running_var.fill_(5.0)
    module.eval()
    assert fold_batch_norms(module) is module
    assert inference_network(module) is module


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN for CPU bf16")
def test_bf16_folded_predictions_agree_with_fp32_unfolded_on_a_trained_model(fluo_crop, monkeypatch):
    from napari_deepseg import Trainer, prediction

    from ..conftest import fast_config

    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=40))
    list(trainer.run())
    big = np.tile(image, (2, 2))
    options = dict(tile_size=96, overlap=32)
    folded_bf16 = trainer.model.predict(big, precision="bf16", **options)
    monkeypatch.setattr(prediction, "inference_network", lambda module: module)
    unfolded_fp32 = trainer.model.predict(big, precision="fp32", **options)
    assert len(np.unique(unfolded_fp32)) == 2  # a trained model, not a constant one
    assert (folded_bf16 == unfolded_fp32).mean() >= 0.99
