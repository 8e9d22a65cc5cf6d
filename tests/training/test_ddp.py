"""Training with DistributedDataParallel on the CPU: 2 gloo ranks on 127.0.0.1.

One 2-rank job (``torch.multiprocessing.spawn``) serves the tests of this module: a first run of
3 iterations (weights checked after every step, the model saved by rank 0), then a second run on
the same trainers in which rank 0 alone is given new labels and rank 1 alone asks to stop.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from napari_deepseg import SegmentationModel, Trainer, TrainingDivergedError
from napari_deepseg.training import loop
from napari_deepseg.training.distributed import Collective, is_main_process

from ..conftest import fast_config

WORLD = 2
# A resnet18 U-Net, 2 patches per rank. Every pixel is labelled, so each rank's loss averages as
# many pixels and the mean over the ranks is the combined batch's loss; its BatchNorm layers see
# the combined batch only because they are synchronised. SGD, because Adam divides each gradient
# by its own running size: a gradient that is zero up to rounding (a direction a BatchNorm
# cancels) becomes a step of +-lr whose sign is rounding noise, and after 3 steps some weights
# then differ by ~lr between any two summation orders (measured: 6e-3 with Adam, 4e-6 with SGD).
# No CRF term: each rank normalises it over its own share of the batch (docs/distributed.md), so
# with it the ranks match one process only approximately; these tests hold them to 1e-5.
SETTINGS: dict[str, Any] = dict(
    encoder="resnet18", iterations=3, batch_size=2, patch_size=64, optimizer="sgd", regularisation_weight=0.0
)


def _pair() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:96, :96]
    labels = np.where((yy - 40) ** 2 + (xx - 52) ** 2 < 500, 2, 1).astype(np.uint8)
    noise = np.random.default_rng(3).normal(0, 0.3, labels.shape)
    return (labels * 0.5 + noise).astype(np.float32), labels


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for tensor in module.state_dict().values():
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _states(trainer: Trainer) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "trained": {k: v.clone() for k, v in trainer._weights.trained.state_dict().items()},
        "average": {k: v.clone() for k, v in trainer.model.module.state_dict().items()},
    }


def _rank_main(rank: int, port: int, out: Path) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    image, labels = _pair()
    trainer = Trainer(image, labels, fast_config(**SETTINGS))
    first = []
    for record in trainer.run():
        first.append(
            (record.loss, record.error_rate, _digest(trainer._weights.trained), _digest(trainer.model.module))
        )
    if rank == 0:
        trainer.model.save(out / "model.deepseg")
    states = _states(trainer)
    grown = labels.copy()
    grown[:, :20] = 2  # a stroke of class 2 over the left edge
    second = []
    for record in trainer.run():
        second.append(record.iteration)
        if rank == 0 and record.iteration == 4:
            trainer.update_labels(grown)
        if rank == 1 and record.iteration == 5:
            trainer.request_stop()
    result = dict(
        first=first,
        states=states,
        second=second,
        labels=trainer.data.train_labels[0],
        version=trainer.data.version,
        group_left=dist.is_initialized(),
        norms={type(m).__name__ for m in trainer._weights.trained.modules() if "Norm" in type(m).__name__},
        own_group=_own_group(rank, image, labels),
    )
    torch.save(result, out / f"rank{rank}.pt")


def _own_group(rank: int, image: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A script that made its own process group: the trainer joins it and leaves it open; rank 0's
    clock counts for all; a loss that is NaN on rank 1 alone stops both ranks at that iteration."""
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))  # a hang fails, not blocks
    collective = Collective()
    clock = collective.agree(False, 10.0 + rank)
    after = collective.after_step(1.0 + rank, 0.25 if rank == 0 else math.nan)
    trainer = Trainer(image, labels, fast_config(**SETTINGS))
    if rank == 1:
        calls = iter(range(100))
        clean = loop.sparse_cross_entropy
        loop.sparse_cross_entropy = lambda *a: clean(*a) * (math.nan if next(calls) == 1 else 1.0)
    try:
        list(trainer.run())
        diverged = None
    except TrainingDivergedError as err:
        diverged = err.iteration
    kept = dist.is_initialized()
    dist.destroy_process_group()
    return dict(clock=clock, after=after, diverged=diverged, kept=kept, weights=_digest(trainer.model.module))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(_free_port(), out), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], out


def test_the_ranks_hold_identical_weights_after_every_step(ranks):
    results, _ = ranks
    zero, one = results
    assert len(zero["first"]) == SETTINGS["iterations"]
    # Same loss and error rate (means over the ranks), same trained and averaged weights: hashes
    # of every parameter and buffer, BatchNorm running statistics included.
    assert zero["first"] == one["first"]
    assert len({step[2] for step in zero["first"]}) == SETTINGS["iterations"]  # the weights did move
    for kind in ("trained", "average"):
        for name, tensor in zero["states"][kind].items():
            assert torch.equal(tensor, one["states"][kind][name]), f"{kind} {name}"


def test_rank_zero_alone_saves_and_the_file_holds_its_weights(ranks):
    results, out = ranks
    assert sorted(p.name for p in out.iterdir()) == ["model.deepseg", "rank0.pt", "rank1.pt"]
    saved = SegmentationModel.load(out / "model.deepseg")
    assert saved.iterations_trained == SETTINGS["iterations"]
    state = saved.module.state_dict()
    for name, tensor in results[0]["states"]["average"].items():
        assert torch.equal(state[name], tensor), name
    # Plain BatchNorm again once the run is over, and the process group the run made is gone.
    assert results[0]["norms"] == results[1]["norms"] == {"BatchNorm2d"}
    assert not results[0]["group_left"] and not results[1]["group_left"]


def test_two_ranks_match_one_process_on_the_combined_batch(ranks):
    results, _ = ranks
    image, labels = _pair()
    config = fast_config(**{**SETTINGS, "batch_size": WORLD * SETTINGS["batch_size"]})
    single = Trainer(image, labels, config)
    losses = [record.loss for record in single.run()]
    np.testing.assert_allclose([step[0] for step in results[0]["first"]], losses, rtol=1e-5)
    reference = _states(single)
    # Weights to 1e-5; BatchNorm running statistics to 1e-4: SyncBatchNorm sums them over the
    # ranks in another order than one process's reduction (running_var ~1.3 differed by 1.8e-5).
    for kind in ("trained", "average"):
        for statistics in (False, True):
            worst = max(
                float((tensor.double() - reference[kind][name].double()).abs().max())
                for name, tensor in results[0]["states"][kind].items()
                if tensor.is_floating_point() and ("running_" in name) == statistics
            )
            assert worst < (1e-4 if statistics else 1e-5), f"{kind}, statistics={statistics}: {worst}"


def test_labels_from_rank_zero_and_a_stop_from_rank_one_reach_every_rank(ranks):
    results, _ = ranks
    zero, one = results
    # Rank 1 asked to stop after iteration 5: neither rank trained iteration 6.
    assert zero["second"] == one["second"] == [4, 5]
    assert zero["version"] == one["version"] == 1
    np.testing.assert_array_equal(zero["labels"], one["labels"])
    assert (zero["labels"][:, :20] == 2).all()


def test_a_script_s_own_group_is_joined_and_every_rank_takes_the_same_decision(ranks):
    zero, one = (result["own_group"] for result in ranks[0])
    assert zero["clock"] == one["clock"] == (False, 10.0)  # rank 0's training seconds
    assert zero["after"] == one["after"] == (1.0, 0.25)  # rank 1 had no labelled pixel (nan)
    assert zero["diverged"] == one["diverged"] == 2  # the NaN loss was rank 1's alone
    assert zero["weights"] == one["weights"]
    assert zero["kept"] and one["kept"]  # the trainer leaves a group it did not make


def test_a_single_process_makes_no_process_group(fluo_crop):
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=1))
    assert (trainer._dist.rank, trainer._dist.world_size) == (0, 1)
    list(trainer.run())
    assert not dist.is_initialized() and is_main_process()
    # Outside a group the collective hands everything back unchanged.
    loss = torch.tensor(0.5)
    assert Collective().mean(loss) is loss and Collective().agree(True, 2.0) == (True, 2.0)


def test_torchrun_trains_end_to_end(tmp_path):
    """``torchrun --no-python napari-deepseg train``: rank 0 alone writes, and the model equals one
    process's with the combined batch (2 ranks x 1 patch against 1 x 2 patches)."""
    tifffile = pytest.importorskip("tifffile")
    from napari_deepseg.cli import main

    bin_dir = Path(sys.executable).parent
    torchrun = shutil.which("torchrun", path=str(bin_dir)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    image, labels = _pair()
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    options = [
        *("--image", "image.tif", "--labels", "labels.tif", "--encoder", "resnet18", "--no-pretrained"),
        *("--no-augmentation", "--device", "cpu", "--iterations", "2", "--patch-size", "64"),
        *("--optimizer", "sgd", "--validation-fraction", "0"),
        *("--precision", "fp32"),  # "auto" is bf16 on CPUs that have it: equality needs fp32
    ]
    launch = [torchrun, "--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={_free_port()}"]
    command = [*launch, "--no-python", "napari-deepseg", "train", *options]
    command += ["--batch-size", "1", "--output", "ddp.deepseg", "--history", "history.csv"]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("saved ") == 1  # rank 0 alone writes and says so
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header and one row per iteration, written once
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        assert main(["train", *options, "--batch-size", "2", "--output", "one.deepseg"]) == 0
    finally:
        os.chdir(cwd)
    ddp, one = (SegmentationModel.load(tmp_path / name) for name in ("ddp.deepseg", "one.deepseg"))
    assert ddp.iterations_trained == one.iterations_trained == 2
    reference = one.module.state_dict()
    # Weights to 1e-5. BatchNorm running statistics to 2e-4: SyncBatchNorm's come from sums over the
    # ranks, one process's from its own reduction, and they differ by up to ~5e-5 on some CPUs (AMD
    # EPYC, oneDNN); statistics kept per rank differ by orders of magnitude more.
    parameters = {name for name, _ in one.module.named_parameters()}
    for name, tensor in ddp.module.state_dict().items():
        tolerance = 1e-5 if name in parameters else 2e-4
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=tolerance, msg=name)


def test_labels_sent_to_other_ranks_are_snapshots_and_a_large_one_is_sparse():
    from napari_deepseg.data.regions import SparseLabels
    from napari_deepseg.training import distributed

    small = np.zeros((64, 64), np.uint8)
    small[3, 4] = 1
    sent = distributed._snapshot(small)
    small[5, 5] = 2  # the caller keeps painting: what was sent does not change
    assert isinstance(sent, np.ndarray) and sent[5, 5] == 0 and sent[3, 4] == 1
    side = int(np.sqrt(distributed.LARGE_LABELS)) + 64
    large = np.zeros((side, side), np.uint8)
    large[100:110, 2000:2100] = 1
    sparse = distributed._snapshot(large)
    assert isinstance(sparse, SparseLabels) and distributed._snapshot(sparse) is sparse
    large[0, 0] = 2
    np.testing.assert_array_equal(np.asarray(sparse[90:120, 1990:2110]), large[90:120, 1990:2110])
    assert np.asarray(sparse[0:1, 0:1])[0, 0] == 0
