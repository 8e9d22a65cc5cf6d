"""ONNX export through ``torch.onnx`` (dynamo) with dynamic batch, height and width."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from typing import Any

import numpy as np
import torch

from ._contract import InputContract, ProbabilityNetwork, TestTile, check_outputs

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "probabilities"
METADATA_KEY = "napari_deepseg"  # metadata_props entry holding export_metadata() as JSON


def onnx_bytes(
    network: ProbabilityNetwork, tile: TestTile, contract: InputContract, metadata: dict[str, Any]
) -> bytes:
    """The ONNX model of ``network`` (one file, weights inside), checked through onnxruntime."""
    import onnx

    # Height and width as multiples of the divisor make the padding branches provably no-ops.
    blocks = contract.min_size // contract.size_divisor
    height = contract.size_divisor * torch.export.Dim("height_blocks", min=blocks)
    width = contract.size_divisor * torch.export.Dim("width_blocks", min=blocks)
    shapes = {"x": {0: torch.export.Dim("batch", min=1), 2: height, 3: width}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its progress lines
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            network,
            (torch.from_numpy(tile.network_input),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes,
            opset_version=OPSET,
            verbose=False,
        )
    if program is None:  # only without dynamo
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    proto.doc_string = metadata["input"]["how_to_normalise"]
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
    data: bytes = proto.SerializeToString()
    check_outputs("ONNX", run_onnx(data, tile.network_input), tile)
    return data


def run_onnx(data: bytes | str, network_input: np.ndarray) -> np.ndarray:
    """Run an ONNX model (bytes or a path) with onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {session.get_inputs()[0].name: network_input})[0]
    return out
