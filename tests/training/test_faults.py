"""Faults mid-run: a stop during a long iteration, a NaN loss or gradient, running out of memory.

Each keeps the weights of the last finished step: the averaged weights (what you get) and the
copy the optimiser trains, batch-norm statistics included.
"""

import math
import threading
import time

import pytest
import torch

from napari_deepseg import Trainer
from napari_deepseg.errors import DeviceOutOfMemoryError, TrainingDivergedError
from napari_deepseg.training import loop

from ..conftest import fast_config

SLOW_ITERATION_S = 4.0  # what the slowed forward (or backward) pass takes in all
FINISHED = 2  # iterations run before each fault


def _state(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    """Weights and buffers of the model you get and of the copy the optimiser trains."""
    modules = (trainer.model.module, trainer._weights.trained)
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def _assert_same(before: list[dict[str, torch.Tensor]], trainer: Trainer) -> None:
    after = _state(trainer)
    for a, b in zip(before, after, strict=True):
        assert a.keys() == b.keys()
        changed = [k for k in a if not torch.equal(a[k], b[k])]
        assert not changed, f"changed since the last finished step: {changed[:5]}"
        assert all(torch.isfinite(v).all() for v in b.values() if v.is_floating_point())


def _started(fluo_crop, ema_decay: float = 0.99) -> tuple[Trainer, object, list]:
    """A trainer FINISHED iterations into a long run, its generator, and the state then."""
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=1000, ema_decay=ema_decay))
    run = trainer.run()
    records = [next(run) for _ in range(FINISHED)]
    assert records[-1].iteration == FINISHED
    return trainer, run, _state(trainer)


def _convs(trainer: Trainer) -> list[torch.nn.Conv2d]:
    return [m for m in trainer._weights.trained.modules() if isinstance(m, torch.nn.Conv2d)]


def _stop_later(trainer: Trainer, seconds: float) -> dict[str, float]:
    """Request a stop from another thread after ``seconds``; the time it was requested."""
    asked: dict[str, float] = {}

    def stop() -> None:
        asked["at"] = time.perf_counter()
        trainer.request_stop()

    threading.Timer(seconds, stop).start()
    return asked


@pytest.mark.parametrize("ema_decay", [0.99, 0.0])
def test_stop_mid_forward_returns_within_a_second_and_keeps_the_last_finished_weights(fluo_crop, ema_decay):
    trainer, run, before = _started(fluo_crop, ema_decay)
    convs = _convs(trainer)
    delay = SLOW_ITERATION_S / len(convs)
    calls = []

    def slow(conv_forward):
        def forward(x):
            calls.append(time.perf_counter())
            time.sleep(delay)
            return conv_forward(x)

        return forward

    for conv in convs:
        conv.forward = slow(conv.forward)
    asked = _stop_later(trainer, 0.5)
    rest = list(run)  # the third iteration would take SLOW_ITERATION_S
    took = time.perf_counter() - asked["at"]
    assert rest == []
    assert took < 1.0, f"stopped {took:.2f} s after the request"
    assert 0 < sum(t < asked["at"] for t in calls) < len(convs)  # the stop came mid-forward
    assert len(calls) < len(convs)  # and the pass never finished
    assert trainer.model.iterations_trained == FINISHED and len(trainer.history) == FINISHED
    _assert_same(before, trainer)
    assert not trainer.model.module.training and not trainer.model.training_in_progress


def test_stop_mid_backward_returns_within_a_second_and_keeps_the_last_finished_weights(fluo_crop):
    trainer, run, before = _started(fluo_crop)
    convs = _convs(trainer)
    delay = SLOW_ITERATION_S / len(convs)
    calls = []

    def slow_gradient(grad):
        calls.append(time.perf_counter())
        time.sleep(delay)

    handles = [conv.weight.register_hook(slow_gradient) for conv in convs]
    asked = _stop_later(trainer, 0.5)
    rest = list(run)
    took = time.perf_counter() - asked["at"]
    for handle in handles:
        handle.remove()
    assert rest == []
    assert took < 1.0, f"stopped {took:.2f} s after the request"
    assert 0 < sum(t < asked["at"] for t in calls) < len(convs) and len(calls) < len(convs)
    assert trainer.model.iterations_trained == FINISHED
    _assert_same(before, trainer)
    assert all(p.grad is None for p in trainer._weights.trained.parameters())  # half a pass dropped


def test_a_stop_between_iterations_ends_the_run_at_once_and_a_new_run_goes_on(fluo_crop):
    trainer, run, before = _started(fluo_crop)
    trainer.request_stop()
    start = time.perf_counter()
    assert list(run) == []
    assert time.perf_counter() - start < 0.05  # no other iteration ran
    assert trainer.model.iterations_trained == FINISHED
    _assert_same(before, trainer)
    again = trainer.run()  # the request ended with its run
    assert next(again).iteration == FINISHED + 1
    again.close()


def _fail_on_third_iteration(monkeypatch, make_loss):
    """Patch the loop's cross-entropy so that iteration FINISHED + 1 returns ``make_loss(loss)``."""
    real = loop.sparse_cross_entropy
    calls = []

    def patched(logits, y, weights=None):
        calls.append(1)
        loss = real(logits, y, weights)
        return make_loss(loss) if len(calls) == FINISHED + 1 else loss

    monkeypatch.setattr(loop, "sparse_cross_entropy", patched)


@pytest.mark.parametrize("ema_decay", [0.99, 0.0])
def test_a_nan_loss_stops_with_a_message_and_the_last_finite_weights(fluo_crop, monkeypatch, ema_decay):
    _fail_on_third_iteration(monkeypatch, lambda loss: loss * math.nan)
    trainer, run, before = _started(fluo_crop, ema_decay)
    with pytest.raises(TrainingDivergedError) as caught:
        next(run)
    message = str(caught.value)
    assert "diverged at iteration 3 (the loss is nan)" in message
    assert "the weights of iteration 2" in message and "lower the learning rate" in message
    assert caught.value.iteration == 3 and isinstance(caught.value, FloatingPointError)
    assert trainer.model.iterations_trained == FINISHED
    _assert_same(before, trainer)  # the batch-norm statistics of the NaN pass are undone too


class _NaNGradient(torch.autograd.Function):
    """The identity forward; NaN gradients backward (a finite loss whose backward overflows)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def test_nan_gradients_with_a_finite_loss_are_never_applied(fluo_crop, monkeypatch):
    _fail_on_third_iteration(monkeypatch, _NaNGradient.apply)
    trainer, run, before = _started(fluo_crop)
    with pytest.raises(TrainingDivergedError, match=r"iteration 3 \(its gradients are not finite\)"):
        next(run)
    _assert_same(before, trainer)


OUT_OF_MEMORY = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total)"),
    RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
]


@pytest.mark.parametrize("error", OUT_OF_MEMORY, ids=["cuda", "mps", "cpu"])
def test_out_of_memory_says_what_to_lower_and_keeps_the_model(fluo_crop, error):
    trainer, run, before = _started(fluo_crop)
    first = _convs(trainer)[0]
    real = first.forward
    first.forward = lambda x: (_ for _ in ()).throw(error)
    with pytest.raises(DeviceOutOfMemoryError) as caught:
        next(run)
    message = str(caught.value)
    assert message.startswith("out of memory on cpu at iteration 3 (batch size 2, patch size 64)")
    assert "lower the batch size or the patch size" in message
    assert "the weights of iteration 2" in message and str(error).splitlines()[0] in message
    assert "out of memory" in message.lower()  # what the widgets look for
    assert trainer.model.iterations_trained == FINISHED
    _assert_same(before, trainer)
    first.forward = real  # with the patch size lowered, say: the same trainer goes on
    again = trainer.run()
    assert next(again).iteration == FINISHED + 1
    again.close()


def test_other_errors_pass_through_unchanged(fluo_crop):
    trainer, run, _ = _started(fluo_crop)
    _convs(trainer)[0].forward = lambda x: (_ for _ in ()).throw(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="^a bug$"):
        next(run)
