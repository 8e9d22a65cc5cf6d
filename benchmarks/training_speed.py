"""Training speed: seconds per iteration (batch 4, 256x256, 3 classes) against reference networks.

For each architecture, measured in the same run and interleaved (A B C A B C ...), medians over
the rounds:

- ``reference``: the reference implementation of the same network, fp32, the plain loop its users
  write (random batch, cross-entropy with an ignore index, Adam): segmentation-models-pytorch
  (``pip install ".[bench]"``) ``Unet`` on our default encoder (``resnet34``) and
  ``DeepLabV3Plus('resnet50')``; torchvision ``fcn_resnet50`` for FCN (no library ships
  FCN-8s/VGG16; torchvision's FCN is a dilated ResNet-50 head at 1/8, so that row is a "nearest
  reference", not the same network).
- ``ours fp32``: our network in the same plain fp32 loop (same network => ratio <= 1.0 target).
- ``ours default``: one iteration of ``Trainer.run()`` with default settings (precision auto:
  bf16 autocast + channels_last on CPUs with AMX/AVX512-BF16), including patch sampling and
  augmentation: what a user gets. Target: >= 2.5x faster than the fp32 reference on such CPUs.

Peak RSS of a training process (default settings, 20 iterations) is measured in a fresh
subprocess per architecture. Target: <= 2.5 GB.

    python benchmarks/training_speed.py [--rounds 5] [--per-round 2] [--architectures unet ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from napari_deepseg import Trainer, TrainingConfig
from napari_deepseg._device import cpu_has_fast_bf16, resolve_precision
from napari_deepseg.models import architecture_spec, build_model

BATCH, SIZE, CLASSES = 4, 256, 3


def _references() -> dict[str, tuple[str, Callable[[], torch.nn.Module]]]:
    """Architecture -> (description, builder) of the reference network."""
    import torchvision.models.segmentation as tvs

    refs: dict[str, tuple[str, Callable[[], torch.nn.Module]]] = {
        "fcn8s": (
            "torchvision fcn_resnet50 (nearest; not FCN-8s)",
            lambda: _OutputOf(
                tvs.fcn_resnet50(weights=None, weights_backbone=None, num_classes=CLASSES, aux_loss=False)
            ),
        ),
    }
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        print(
            "segmentation-models-pytorch is not installed (pip install '.[bench]'): "
            "U-Net and DeepLabv3+ run without their reference",
            file=sys.stderr,
        )
        return refs
    # The same network as our default: smp's U-Net on our default encoder (ResNet-34 since issue 8).
    unet_encoder = architecture_spec("unet").default_encoder
    refs["unet"] = (
        f"smp Unet('{unet_encoder}')",
        lambda: smp.Unet(unet_encoder, encoder_weights=None, classes=CLASSES),
    )
    refs["deeplabv3plus"] = (
        "smp DeepLabV3Plus('resnet50')",
        lambda: smp.DeepLabV3Plus("resnet50", encoder_weights=None, classes=CLASSES),
    )
    return refs


class _OutputOf(torch.nn.Module):
    """torchvision's segmentation models return a dict; take the logits."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)["out"]


def plain_fp32_loop(module: torch.nn.Module) -> Iterator[None]:
    """The loop a reference user runs: fp32, NCHW, one random batch, CE ignoring unlabelled pixels."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
    y = torch.randint(0, CLASSES + 1, (BATCH, SIZE, SIZE), generator=gen) - 1  # -1 = unlabelled
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
    module.train()
    while True:
        loss = F.cross_entropy(module(x), y, ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield


def synthetic_training_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 1024x1024 RGB image with sparse labels of 3 classes (content does not affect speed)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    labels = np.zeros((1024, 1024), np.uint8)
    for c in range(1, CLASSES + 1):
        ys, xs = rng.integers(0, 1024, 400), rng.integers(0, 1024, 400)
        for y, x in zip(ys, xs):
            labels[y : y + 3, x : x + 3] = c
    return image, labels


def default_trainer_loop(architecture: str) -> Iterator[None]:
    image, labels = synthetic_training_data()
    config = TrainingConfig(
        architecture=architecture,
        pretrained=False,
        iterations=100_000,
        batch_size=BATCH,
        patch_size=SIZE,
        validation_fraction=0.0,
    )
    for _ in Trainer(image, labels, config).run():
        yield


def timed(loop: Iterator[None], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        next(loop)
        times.append(time.perf_counter() - start)
    return times


def peak_training_rss_mb(architecture: str, iterations: int = 20) -> float:
    """Peak RSS of a fresh process that trains ``iterations`` default iterations.

    VmHWM, not ``getrusage``: Linux carries ru_maxrss across exec, so a child started from this
    (large) process would report the parent's peak.
    """
    code = (
        "import sys\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "from training_speed import default_trainer_loop\n"
        f"loop = default_trainer_loop({architecture!r})\n"
        f"for _ in range({iterations}): next(loop)\n"
        "print(next(int(line.split()[1]) for line in open('/proc/self/status')\n"
        "           if line.startswith('VmHWM')) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architectures", nargs="+", default=["unet", "deeplabv3plus", "fcn8s"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=2, help="iterations per variant per round")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device("cpu")
    default_dtype = resolve_precision("auto", device)
    print(
        f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"fast bf16: {cpu_has_fast_bf16()}, default precision: {default_dtype}"
    )
    print(
        f"batch {BATCH}, {SIZE}x{SIZE}, {CLASSES} classes; {args.rounds} rounds x "
        f"{args.per_round} iterations, interleaved; medians in s/iteration\n"
    )
    references = _references()
    rows = []
    for arch in args.architectures:
        loops: dict[str, Iterator[None]] = {}
        ref_name = "-"
        if arch in references:
            ref_name, build_ref = references[arch]
            loops["reference"] = plain_fp32_loop(build_ref())
        loops["ours fp32"] = plain_fp32_loop(build_model(arch, num_classes=CLASSES, in_channels=3))
        loops["ours default"] = default_trainer_loop(arch)
        for loop in loops.values():
            timed(loop, 2)  # warm-up: allocator, oneDNN kernel selection
        times: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(args.rounds):
            for name, loop in loops.items():
                times[name] += timed(loop, args.per_round)
        medians = {name: float(np.median(t)) for name, t in times.items()}
        del loops
        rss = None if args.no_rss else peak_training_rss_mb(arch)
        rows.append(
            dict(
                architecture=arch,
                reference_name=ref_name,
                ref_s=medians.get("reference"),
                fp32_s=medians["ours fp32"],
                default_s=medians["ours default"],
                rss_mb=rss,
            )
        )

    print(
        f"{'architecture':<15}{'reference':<46}{'ref s/it':>9}{'fp32 s/it':>10}{'default':>9}"
        f"{'fp32/ref':>9}{'ref/default':>12}{'peak RSS':>10}"
    )
    for r in rows:
        print(_row(r))
    with_ref = [r for r in rows if r["ref_s"]]
    speedups = [r["ref_s"] / r["default_s"] for r in with_ref]
    fp32 = [r["fp32_s"] / r["ref_s"] for r in with_ref]
    rss = [r["rss_mb"] for r in rows if r["rss_mb"] is not None]
    summary = "summary:"
    if with_ref:
        summary += (
            f" default path {min(speedups):.1f}-{max(speedups):.1f}x faster than the fp32 "
            f"references (target >= 2.5x); ours fp32 / reference fp32 {min(fp32):.2f}-{max(fp32):.2f}"
            " (target <= 1.0);"
        )
    if rss:
        summary += f" peak training RSS <= {max(rss) / 1024:.2f} GB (target <= 2.5 GB)"
    print("\n" + summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(cpu=cpu_model(), threads=torch.get_num_threads(), torch=torch.__version__, rows=rows),
                f,
                indent=1,
            )


def _row(r: dict) -> str:
    ref_s = r["ref_s"]
    rss = f"{r['rss_mb'] / 1024:.2f} GB" if r["rss_mb"] is not None else "-"
    ref_col = f"{ref_s:>9.2f}" if ref_s else f"{'-':>9}"
    fp32_ratio = f"{r['fp32_s'] / ref_s:>9.2f}" if ref_s else f"{'-':>9}"
    speedup = f"{ref_s / r['default_s']:>11.1f}x" if ref_s else f"{'-':>12}"
    return (
        f"{r['architecture']:<15}{r['reference_name']:<46}{ref_col}{r['fp32_s']:>10.2f}"
        f"{r['default_s']:>9.2f}{fp32_ratio}{speedup}{rss:>10}"
    )


if __name__ == "__main__":
    main()
