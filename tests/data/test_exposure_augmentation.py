"""Gamma and overexposure augmentation: what a differently exposed image looks like after renormalising."""

import numpy as np
import pytest
import torch

from napari_deepseg.config import AugmentationConfig
from napari_deepseg.data.augmentation import Augmenter, overexpose
from napari_deepseg.data.normalisation import CENTRE, SPREAD


def _only(**strengths: float) -> AugmentationConfig:
    return AugmentationConfig(**{**vars(AugmentationConfig.disabled()), **strengths})


def _percentile_units(raw: np.ndarray) -> np.ndarray:
    low, high = np.percentile(raw, 1), np.percentile(raw, 99.8)
    return (raw - low) / (high - low)


@pytest.mark.parametrize("gain", [1.3, 1.6, 2.5])
def test_overexpose_equals_a_saturating_gain_renormalised(gain: float) -> None:
    raw = np.random.default_rng(1).uniform(60, 250, (64, 64))
    low, high = np.percentile(raw, 1), np.percentile(raw, 99.8)
    keep = (255 - gain * low) / (gain * (high - low))
    expected = _percentile_units(np.minimum(raw * gain, 255))
    got = overexpose(torch.from_numpy(_percentile_units(raw)), torch.tensor(keep)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_overexposure_touches_half_the_samples_one_cut_per_channel() -> None:
    torch.manual_seed(0)
    images = torch.rand(64, 3, 16, 16) / SPREAD - CENTRE / SPREAD  # [0, 1] range in network units
    labels = torch.zeros(64, 16, 16, dtype=torch.int64)
    out, out_labels = Augmenter(_only(overexposure=0.8), rgb=True)(images, labels)
    assert torch.equal(out_labels, labels)
    units_in, units_out = images * SPREAD + CENTRE, out * SPREAD + CENTRE
    changed = [not torch.allclose(units_in[b], units_out[b]) for b in range(64)]
    assert 20 <= sum(changed) <= 44  # half of 64, give or take
    for b in np.flatnonzero(changed):
        for c in range(3):
            unsaturated = units_out[b, c] < 1 - 1e-6
            keep = units_in[b, c][unsaturated] / units_out[b, c][unsaturated]
            assert keep.std() < 1e-4 and 0.2 - 1e-4 <= keep.mean() <= 1 + 1e-4
    assert units_out.max() <= 1 + 1e-6


def test_gamma_bends_only_the_unit_range_and_keeps_order() -> None:
    torch.manual_seed(0)
    values = torch.linspace(-0.5, 1.5, 201)
    images = ((values - CENTRE) / SPREAD).view(1, 1, 1, -1).repeat(8, 1, 1, 1)
    out, _ = Augmenter(_only(gamma=0.4), rgb=False)(images, torch.zeros(8, 1, 201, dtype=torch.int64))
    units = out * SPREAD + CENTRE
    assert (units.diff(dim=-1) > 0).all()  # monotonic
    inside = (values >= 0) & (values <= 1)
    below, above = values < 0, values > 1
    torch.testing.assert_close(units[..., below], values[below].expand_as(units[..., below]))
    torch.testing.assert_close(units[..., above], values[above].expand_as(units[..., above]))
    # one gamma per sample within [1 / 1.4, 1.4]: log(u') / log(u) is constant inside (0, 1)
    interior = inside & (values > 0.05) & (values < 0.95)
    ratios = torch.log(units[..., interior]) / torch.log(values[interior])
    assert (ratios.std(dim=-1) < 1e-3).all()
    assert ((ratios.mean(dim=-1) > 1 / 1.4 - 1e-3) & (ratios.mean(dim=-1) < 1.4 + 1e-3)).all()
    assert ratios.mean(dim=-1).std() > 0.02  # draws differ between samples


def test_exposure_strengths_are_validated() -> None:
    with pytest.raises(ValueError, match="overexposure"):
        AugmentationConfig(overexposure=1.0)
    with pytest.raises(ValueError, match="gamma"):
        AugmentationConfig(gamma=-0.1)
