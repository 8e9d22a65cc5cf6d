"""Model-only inference speed of each default network against its reference, in one run.

For each architecture with its default encoder, one tile (batch 1, 3 channels) through the network
alone, at the precision prediction uses on this machine (``auto``: bf16 autocast + channels_last
on CPUs with native bf16, else fp32), interleaved A B C A B C ..., medians over the rounds:

- ``ours``: the training module as it is (BatchNorm separate), input in the training layout;
- ``ours folded``: the same with every BatchNorm folded into its convolution, same layout;
- ``prediction``: what prediction runs (``models._folding.inference_network``: folded, and
  channels_last on the CPU whatever the precision);
- ``smp`` / ``smp channels_last``: segmentation-models-pytorch's identical network
  (``pip install ".[bench]"``), ``Unet`` on our default encoder, ``DeepLabV3Plus('resnet50')``, in the
  training layout and in channels_last; none ships FCN-8s.
- ``--compile``: also ``torch.compile`` of the prediction network, with its first-call time.

Target (issue 10): prediction >= the faster smp row, for every default architecture.

    python benchmarks/inference_speed.py [--tile 512] [--rounds 7] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import numpy as np
import torch

from napari_deepseg._device import autocast, resolve_precision, use_channels_last
from napari_deepseg.models import architecture_spec, build_model
from napari_deepseg.models._folding import fold_batch_norms, inference_network

CLASSES = 3


def smp_reference(architecture: str) -> torch.nn.Module | None:
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        return None
    if architecture == "unet":  # on our default encoder, so the networks are the same
        encoder = architecture_spec("unet").default_encoder
        return smp.Unet(encoder, encoder_weights=None, classes=CLASSES)
    if architecture == "deeplabv3plus":
        return smp.DeepLabV3Plus("resnet50", encoder_weights=None, classes=CLASSES)
    return None


def with_running_statistics(module: torch.nn.Module) -> torch.nn.Module:
    """A few training-mode passes so the BatchNorms hold non-trivial statistics (as after training)."""
    module.train()
    with torch.no_grad():
        for _ in range(2):
            module(torch.randn(2, 3, 128, 128))
    return module.eval()


def forward_seconds(
    run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dtype: torch.dtype
) -> float:
    device = x.device
    with torch.inference_mode(), autocast(device, dtype):
        start = time.perf_counter()
        run(x).float().softmax(dim=1)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--architectures", nargs="+", default=["unet", "deeplabv3plus", "fcn8s"])
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cpu")
    dtype = resolve_precision("auto", device)
    memory_format = torch.channels_last if use_channels_last(device, dtype) else torch.contiguous_format
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {dtype}, "
        f"tile {args.tile}x{args.tile}, {args.rounds} rounds, medians"
    )
    x = torch.randn(1, 3, args.tile, args.tile).to(memory_format=memory_format)
    x_last = x.to(memory_format=torch.channels_last)
    for architecture in args.architectures:
        torch.manual_seed(0)
        ours = with_running_statistics(build_model(architecture, num_classes=CLASSES, in_channels=3))
        ours = ours.to(memory_format=memory_format)
        prediction = inference_network(ours)
        runs: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = {
            "ours": (ours, x),
            "ours folded": (fold_batch_norms(ours).to(memory_format=memory_format), x),
            "prediction": (prediction, x_last),
        }
        reference = smp_reference(architecture)
        if reference is not None:
            reference = with_running_statistics(reference)
            runs["smp"] = (reference.to(memory_format=memory_format), x)
            runs["smp channels_last"] = (
                copy.deepcopy(reference).to(memory_format=torch.channels_last),
                x_last,
            )
        if args.compile:
            compiled = torch.compile(prediction)
            first = forward_seconds(compiled, x_last, dtype)
            print(f"  torch.compile first call: {first:.1f} s")
            runs["prediction compiled"] = (compiled, x_last)
        for run, tile in runs.values():  # warm-up: oneDNN primitives, allocator
            forward_seconds(run, tile, dtype)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, (run, tile) in runs.items():
                times[name].append(forward_seconds(run, tile, dtype))
        medians = {name: float(np.median(t)) for name, t in times.items()}
        encoder = architecture_spec(architecture).default_encoder
        print(f"{architecture} ({encoder})")
        for name, seconds in medians.items():
            spread = np.percentile(times[name], [25, 75])
            mp_s = args.tile**2 / 1e6 / seconds
            print(
                f"  {name:<22}{mp_s:>7.2f} MP/s  ({seconds * 1000:.0f} ms, "
                f"IQR {spread[0] * 1000:.0f}-{spread[1] * 1000:.0f})"
            )
        summary = (
            f"summary {architecture}: prediction {medians['ours'] / medians['prediction']:.2f}x the "
            f"training module (folding alone {medians['ours'] / medians['ours folded']:.2f}x)"
        )
        if "smp" in medians:
            best = min(medians["smp"], medians["smp channels_last"])
            summary += f", {best / medians['prediction']:.2f}x the faster smp (target >= 1.0)"
        print(summary, flush=True)


if __name__ == "__main__":
    main()
