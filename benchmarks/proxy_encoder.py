"""A stand-in for ImageNet weights where none can be fetched: a ResNet encoder trained densely on
the *other* DSB2018 modality, saved as a torchvision state-dict file that ``pretrained=True`` loads.

No ImageNet file can be downloaded on the benchmark machines, so what ImageNet weights give is not
measurable here. This proxy exercises the same path (``Trainer(..., weights_path=...)``,
``TrainingConfig(pretrained=True)``, the first convolution adapted to the channel count) and
answers a narrower question: does a pretrained encoder from a related domain (nuclei in the other
modality, full masks of its train split; no held-out image of either set is seen) help the
stroke-trained network at a fixed CPU budget? The number for real ImageNet weights needs those
weights (``napari-deepseg weights download resnet34``, then ``accuracy.py --pretrained-weights``
with the cached file).

    python benchmarks/proxy_encoder.py --source fluorescence --output proxy-fluo.pth
    python benchmarks/accuracy.py --datasets H&E --only strokes --budgets 30 --iterations 400 \
        --no-robustness --pretrained-weights proxy-fluo.pth
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import CLASS_NAMES, add_data_options, dense_labels, load_dataset
from torchvision.models import resnet18, resnet34, resnet50

from napari_deepseg import Trainer, TrainingConfig

RESNETS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
# Our ResNetEncoder's stages -> torchvision's module names (stage 1 is maxpool + layer1).
STAGE_PREFIXES = {"stages.0.0.": "conv1.", "stages.0.1.": "bn1.", "stages.1.1.": "layer1."}
STAGE_PREFIXES |= {f"stages.{i}.": f"layer{i}." for i in (2, 3, 4)}


def torchvision_state(encoder: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The encoder's weights under torchvision's names, the unused classifier from a fresh model."""
    state = {k: v.detach().clone() for k, v in RESNETS[name](weights=None).state_dict().items()}
    for key, value in encoder.state_dict().items():
        prefix = next(p for p in STAGE_PREFIXES if key.startswith(p))
        state[STAGE_PREFIXES[prefix] + key[len(prefix) :]] = value.detach().clone()
    conv1 = state["conv1.weight"]
    if conv1.shape[1] != 3:  # a grey encoder: spread over RGB so that the sum over RGB gives it back
        state["conv1.weight"] = conv1.mean(dim=1, keepdim=True).repeat(1, 3, 1, 1)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_options(parser, "proxy")
    parser.add_argument("--source", required=True, help="the dataset the encoder learns from")
    parser.add_argument("--iterations", type=int, default=400, help="about 3 CPU-minutes on 2 cores in fp32")
    parser.add_argument("--encoder", default="resnet34", choices=sorted(RESNETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    data = load_dataset(args.data, args.source, args.max_images)
    config = TrainingConfig(
        encoder=args.encoder, pretrained=False, iterations=args.iterations, seed=args.seed
    )
    trainer = Trainer(data.images, dense_labels(data.masks), config, class_names=CLASS_NAMES)
    iterations = 0
    for progress in trainer.run():
        iterations = progress.iteration
    state = torchvision_state(trainer.model.module.encoder, args.encoder)
    RESNETS[args.encoder](weights=None).load_state_dict(state)  # the file loads as torchvision's model
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.output)
    print(f"{args.output}: {args.encoder} trained densely on {args.source} ({iterations} iterations)")


if __name__ == "__main__":
    main()
