"""Inference-only copies of a network with each BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one convolution
with scaled weights and a bias: one pass over the activations fewer per block. The training
module is never touched; predictions run on a cached copy that follows its weights.

Which BatchNorms may be folded is found by running the network once on a small input and
watching, through hooks, which BatchNorm receives exactly the output of which convolution; the
folded copy is then checked against the original on that input in float32, and a network
where the two differ (a convolution's output also used elsewhere) is predicted unfolded.
"""

from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

# Relative error above which a folded copy is refused; float32 folding is exact to ~1e-6.
TOLERANCE = 1e-4


@dataclass
class _Folded:
    module: nn.Module | None  # the copy that runs; None: run the source (a reference to it here
    # would keep it alive through the weak cache)
    pairs: list[tuple[str, str]]  # (convolution, BatchNorm) names in the source
    signature: tuple


_cache: weakref.WeakKeyDictionary[nn.Module, _Folded] = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # the preview and a prediction may ask from two threads


def inference_network(module: nn.Module) -> nn.Module:
    """The module to run for prediction: a cached, BatchNorm-folded eval-mode copy of ``module``
    whose weights follow ``module``'s (refreshed in place when they changed), or ``module``
    itself when it has no foldable BatchNorm or is in training mode."""
    if module.training:
        return module
    signature = _signature(module)
    with _lock:
        folded = _cache.get(module)
        if folded is None or folded.signature != signature:
            with torch.no_grad(), torch.inference_mode(False):
                if folded is not None and _same_layout(folded, signature):
                    if folded.module is not None:  # a refusal holds until the layout changes
                        _refresh(folded.module, module, folded.pairs)
                else:
                    folded = _fold(module)
            folded.signature = signature
            _cache[module] = folded
        return module if folded.module is None else folded.module


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """A new eval-mode copy of ``module`` with every BatchNorm that only ever sees a convolution's
    output folded into that convolution; ``module`` itself when there is none (or the fold would
    change the output)."""
    with torch.no_grad(), torch.inference_mode(False):
        folded = _fold(module).module
    return module if folded is None else folded


def _signature(module: nn.Module) -> tuple:
    # _version counts in-place writes (optimiser steps, EMA updates, load_state_dict).
    tensors = (*module.parameters(), *module.buffers())
    return tuple((t.data_ptr(), t._version, t.device, t.stride()) for t in tensors)


def _same_layout(folded: _Folded, signature: tuple) -> bool:
    """Whether the source's tensors are still on the same devices with the same strides: then
    the copy is refreshed in place, else made anew."""
    return [s[2:] for s in folded.signature] == [s[2:] for s in signature]


def _fold(source: nn.Module) -> _Folded:
    if not any(isinstance(m, nn.BatchNorm2d) for m in source.modules()):
        return _Folded(None, [], ())  # nothing to fold: not even one forward
    was_training = source.training
    source.eval()
    try:
        example = _example_input(source)
        if example is None:
            return _Folded(None, [], ())
        try:
            pairs = _conv_bn_pairs(source, example)
        except Exception:  # a network that does not take this input: predict it as it is
            return _Folded(None, [], ())
        if not pairs:
            return _Folded(None, [], ())
        folded = copy.deepcopy(source).eval()
        for conv_name, bn_name in pairs:
            conv = folded.get_submodule(conv_name)
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device))
            _set_submodule(folded, bn_name, nn.Identity())
        _refresh(folded, source, pairs)
        if example.device.type == "cpu":  # oneDNN: 1.1-1.4x faster in fp32 as well as in bf16
            folded = folded.to(memory_format=torch.channels_last)
        expected, got = source(example).float(), folded(example).float()
        error = (expected - got).abs().max() / expected.abs().max().clamp_min(1e-12)
        if not torch.isfinite(error) or error > TOLERANCE:
            return _Folded(None, [], ())
        return _Folded(folded, pairs, ())
    finally:
        source.train(was_training)


def _refresh(folded: nn.Module, source: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Copy ``source``'s current weights into ``folded``, folding each pair's BatchNorm."""
    state = source.state_dict(keep_vars=True)
    folded_state = folded.state_dict(keep_vars=True)
    convs = {conv for conv, _ in pairs}
    for name, tensor in folded_state.items():
        owner = name.rpartition(".")[0]
        if owner not in convs:
            tensor.data.copy_(state[name].data)
    for conv_name, bn_name in pairs:
        conv, bn, target = (
            m.get_submodule(n) for m, n in ((source, conv_name), (source, bn_name), (folded, conv_name))
        )
        assert (
            isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(target, nn.Conv2d)
        )
        assert bn.running_mean is not None and bn.running_var is not None and target.bias is not None
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        target.weight.data.copy_(weight.data)
        target.bias.data.copy_(bias.data)


def _conv_bn_pairs(module: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) names where the BatchNorm's input is exactly the convolution's
    output, each called once per forward."""
    names = {m: n for n, m in module.named_modules()}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # the tensors are kept so ids stay unique
    calls: dict[str, int] = {}
    pairs: dict[str, str] = {}

    def after_conv(conv: nn.Module, _: Any, output: torch.Tensor) -> None:
        calls[names[conv]] = calls.get(names[conv], 0) + 1
        outputs[id(output)] = (names[conv], output)

    def before_bn(bn: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        calls[names[bn]] = calls.get(names[bn], 0) + 1
        seen = outputs.get(id(inputs[0]))
        if seen is not None and seen[1] is inputs[0]:
            pairs[names[bn]] = seen[0]

    handles = []
    for m in module.modules():
        if type(m) is nn.Conv2d:
            handles.append(m.register_forward_hook(after_conv))
        elif type(m) is nn.BatchNorm2d and m.track_running_stats and m.running_var is not None:
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        module(example)
    finally:
        for h in handles:
            h.remove()
    used = list(pairs.values())
    return [
        (conv, bn)
        for bn, conv in pairs.items()
        if calls[bn] == 1 and calls[conv] == 1 and used.count(conv) == 1
    ]


def _example_input(module: nn.Module) -> torch.Tensor | None:
    first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return None
    size = 2 * int(getattr(module, "size_divisor", 32))
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, first.in_channels, size, size, generator=generator)
    return example.to(first.weight.device)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)
