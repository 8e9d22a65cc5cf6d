import pytest
import torch

from napari_deepseg import _device
from napari_deepseg._device import (
    available_devices,
    eval_mode,
    resolve_device,
    resolve_precision,
    worker_thread_count,
)


def _machine(monkeypatch, *, gpus: int = 0, mps: bool = False) -> None:
    """Pretend the machine has ``gpus`` CUDA GPUs and (or not) Apple MPS."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_available_devices_always_lists_auto_and_cpu(monkeypatch):
    _machine(monkeypatch)
    assert available_devices() == {"auto": "auto (GPU if available)", "cpu": "cpu"}


def test_available_devices_names_each_gpu_then_mps(monkeypatch):
    _machine(monkeypatch, gpus=2, mps=True)
    devices = available_devices()
    assert list(devices) == ["auto", "cpu", "cuda:0", "cuda:1", "mps"]
    assert devices["cuda:1"] == "cuda:1 (Fake GPU 1)" and devices["mps"] == "mps"


def test_every_listed_device_resolves_on_this_machine():
    for value in available_devices():
        assert isinstance(resolve_device(value), torch.device)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("gpus", "mps", "expected"), [(0, False, "cpu"), (0, True, "mps"), (1, True, "cuda")]
)
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, gpus, mps, expected):
    _machine(monkeypatch, gpus=gpus, mps=mps)
    assert resolve_device("auto").type == expected


def test_unknown_or_missing_devices_are_refused(monkeypatch):
    _machine(monkeypatch)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        resolve_device("cuda:0")


@pytest.mark.parametrize("name", ["meta", "xpu", "ipu"])
def test_devices_torch_knows_but_training_cannot_use_are_refused(monkeypatch, name):
    _machine(monkeypatch)
    with pytest.raises(ValueError, match=f"unsupported device '{name}'"):
        resolve_device(name)


def test_a_gpu_index_past_the_last_gpu_and_a_missing_mps_are_refused(monkeypatch):
    _machine(monkeypatch, gpus=2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"has 2 CUDA GPU\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match="Apple MPS is not available"):
        resolve_device("mps")


@pytest.mark.parametrize(("torch_threads", "expected"), [(16, 15), (4, 3), (2, 1), (1, 1)])
def test_the_worker_leaves_one_core_to_the_gui(monkeypatch, torch_threads, expected):
    monkeypatch.setattr(torch, "get_num_threads", lambda: torch_threads)
    assert worker_thread_count() == expected


@pytest.mark.parametrize(("fast_bf16", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_precision_on_cpu_follows_the_bf16_units(monkeypatch, fast_bf16, expected):
    monkeypatch.setattr(_device, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp32", torch.device("cpu")) == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


def test_bf16_on_mps_is_refused():
    with pytest.raises(ValueError, match="bf16 precision is not supported on MPS"):
        resolve_precision("bf16", torch.device("mps"))
    assert resolve_precision("auto", torch.device("mps")) == torch.float32


def test_eval_mode_restores_the_previous_mode():
    module = torch.nn.Dropout()
    with eval_mode(module):
        assert not module.training
    assert module.training
    module.eval()
    with eval_mode(module):
        pass
    assert not module.training
