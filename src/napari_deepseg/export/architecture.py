"""The architecture callable of the ``pytorch_state_dict`` weights in an exported bioimage.io package.

bioimage.io tools that run PyTorch state dicts (``bioimageio.core``) call
``napari_deepseg.export.architecture.build_network(**kwargs)`` with the kwargs recorded in the
package and load the weights into the module it returns; napari-deepseg must be installed for
that. Tools without Python (deepImageJ, ilastik's ONNX runner) use the TorchScript or ONNX
weights of the same package instead.
"""

from __future__ import annotations

from typing import Any

from ._contract import ProbabilityNetwork


def build_network(
    *,
    architecture: str,
    encoder: str,
    num_classes: int,
    in_channels: int,
    options: dict[str, Any] | None = None,
) -> ProbabilityNetwork:
    """The untrained network with the softmax: normalised (N, C, H, W) in, probabilities (N, K, H, W) out.
    ``options``: the architecture's own arguments as the package records them."""
    from ..models import build_model

    network = build_model(
        architecture,
        num_classes=num_classes,
        in_channels=in_channels,
        encoder=encoder,
        pretrained=False,
        options=options,
    )
    return ProbabilityNetwork(network).eval()
