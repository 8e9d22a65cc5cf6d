"""TorchScript export: the traced network with the softmax, its description as an extra file."""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np
import torch

from ._contract import ProbabilityNetwork, TestTile, check_outputs

# The archive member holding export_metadata(); read it with
# torch.jit.load(path, _extra_files={METADATA_FILE: ""}).
METADATA_FILE = "napari_deepseg.json"


def torchscript_bytes(network: ProbabilityNetwork, tile: TestTile, metadata: dict[str, Any]) -> bytes:
    """The TorchScript archive of ``network``, checked against the engine on ``tile``.

    Traced on the test tile: the padding and cropping of ``SegmentationNetwork.forward`` are
    no-ops for sizes that fit the input contract, so the trace holds for every such size.
    """
    example = torch.from_numpy(tile.network_input)
    with warnings.catch_warnings():
        # jit.trace is deprecated in favour of torch.export, whose files deepImageJ cannot read;
        # the shape-to-bool warnings are about the padding branches, fixed by the input contract.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(network, example, check_trace=False)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated too, for the same reason
        torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata, indent=1)})
    data = buffer.getvalue()
    check_outputs("TorchScript", run_torchscript(data, tile.network_input), tile)
    return data


def run_torchscript(data: bytes, network_input: np.ndarray) -> np.ndarray:
    """Load a TorchScript archive from memory and run it on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.no_grad():
        out: np.ndarray = module(torch.from_numpy(network_input)).numpy()
    return out
