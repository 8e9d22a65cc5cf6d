"""The README demo's training (fluorescence sample, its strokes, patch 128, batch 4) per encoder,
iteration count and seed: nucleus IoU against the sample's full mask, and the CPU seconds.

Each argument is ``encoder:iterations:seed[:crf_weight]``::

    OMP_NUM_THREADS=1 python benchmarks/demo_seeds.py resnet18:150:0 resnet18:150:1 resnet34:150:0
"""

from __future__ import annotations

import sys
import time

import torch

from napari_deepseg import sample_data
from napari_deepseg.cli.demo import PRESET
from napari_deepseg.config import TrainingConfig
from napari_deepseg.prediction import apply_threshold
from napari_deepseg.training import Trainer
from napari_deepseg.training.losses import confusion_matrix, iou_and_dice


def main() -> None:
    image, strokes = sample_data.load_fluorescence_sample()
    scores: dict[str, list[float]] = {}
    truth = torch.from_numpy(sample_data.load_sample_mask("fluorescence") + 1)  # 1 background, 2 nucleus
    for spec in sys.argv[1:]:
        encoder, iterations, seed, *crf = spec.split(":")
        config = TrainingConfig(
            architecture="unet",
            encoder=encoder,
            iterations=int(iterations),
            seed=int(seed),
            regularisation_weight=float(crf[0]) if crf else 0.0,
            pretrained=False,
            **PRESET,
        )
        trainer = Trainer(image, strokes, config)
        start = time.process_time()
        for _ in trainer.run():
            pass
        cpu = time.process_time() - start
        labels = apply_threshold(trainer.model.predict_proba(image), 0.0)
        iou, _ = iou_and_dice(confusion_matrix(truth, torch.from_numpy(labels == 2), 2))
        print(f"{spec:24} nucleus IoU {iou[1]:.3f}  {cpu:5.1f} s CPU", flush=True)
        scores.setdefault(":".join([encoder, iterations, *crf]), []).append(float(iou[1]))
    means = ", ".join(f"{k} {sum(v) / len(v):.3f} ({len(v)} seeds)" for k, v in scores.items())
    print(f"summary: demo nucleus IoU, mean over seeds: {means}")


if __name__ == "__main__":
    main()
