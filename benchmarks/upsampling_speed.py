"""U-Net fp32 training step with a nearest-neighbour and a bilinear decoder, against
segmentation-models-pytorch's ``Unet`` on the same encoder: training_speed.py's plain fp32 loop
(batch 4, 256x256, 3 classes, Adam), interleaved rounds, medians.

    python benchmarks/upsampling_speed.py --encoder resnet18 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics

import segmentation_models_pytorch as smp
import torch
from training_speed import CLASSES, plain_fp32_loop, timed

from napari_deepseg.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)

    def ours(mode: str) -> torch.nn.Module:
        options = {"upsampling": mode}
        return build_model("unet", num_classes=CLASSES, in_channels=3, encoder=args.encoder, options=options)

    loops = {
        "smp": plain_fp32_loop(smp.Unet(args.encoder, encoder_weights=None, classes=CLASSES)),
        "nearest": plain_fp32_loop(ours("nearest")),
        "bilinear": plain_fp32_loop(ours("bilinear")),
    }
    times: dict[str, list[float]] = {name: [] for name in loops}
    for loop in loops.values():
        timed(loop, 1)  # warm-up
    for _ in range(args.rounds):
        for name, loop in loops.items():
            times[name] += timed(loop, 3)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in median.items():
        print(f"{name:9} {seconds:.3f} s/it")
    print(
        f"summary: U-Net ({args.encoder}) fp32 / smp: nearest {median['nearest'] / median['smp']:.3f}, "
        f"bilinear {median['bilinear'] / median['smp']:.3f}"
    )


if __name__ == "__main__":
    main()
