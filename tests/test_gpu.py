"""On a CUDA device (``pytest -m gpu``; skipped without one): a mixed-precision training run,
prediction, save / load, and the GPU's labels agreeing with the CPU's. ``benchmarks/gpu_check.sh``
runs these first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deepseg import AugmentationConfig, SegmentationModel, Trainer, TrainingConfig
from napari_deepseg.sample_data import load_fluorescence_sample

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def sample():
    return load_fluorescence_sample()


@pytest.fixture(scope="module")
def cuda_run(sample):
    image, strokes = sample
    config = TrainingConfig(
        iterations=60,
        patch_size=128,
        batch_size=8,
        pretrained=False,
        device="cuda",
        precision="auto",  # bf16 autocast on CUDA
        validation_fraction=0.0,
        augmentation=AugmentationConfig.disabled(),
        seed=0,
    )
    trainer = Trainer(image, strokes, config)
    records = list(trainer.run())
    return trainer, records


def test_mixed_precision_training_on_cuda_learns(cuda_run):
    trainer, records = cuda_run
    assert next(trainer.model.module.parameters()).device.type == "cuda"
    assert all(p.dtype == torch.float32 for p in trainer.model.module.parameters())  # autocast, not casts
    losses = [r.loss for r in records]
    assert len(losses) == 60 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


def test_prediction_and_save_load_on_cuda(cuda_run, sample, tmp_path):
    trainer, _ = cuda_run
    image, _ = sample
    model = trainer.model
    labels = model.predict(image, device="cuda", precision="fp32")
    assert labels.shape == image.shape and set(np.unique(labels)) <= {1, 2}
    loaded = SegmentationModel.load(model.save(tmp_path / "cuda.safetensors")).to("cuda")
    assert np.array_equal(loaded.predict(image, device="cuda", precision="fp32"), labels)


def test_gpu_and_cpu_labels_agree(cuda_run, sample):
    trainer, _ = cuda_run
    image, _ = sample
    model = trainer.model
    gpu = model.predict(image, device="cuda")  # bf16 autocast
    cpu = model.to("cpu").predict(image, device="cpu", precision="fp32")
    model.to("cuda")
    assert np.mean(gpu == cpu) >= 0.99
