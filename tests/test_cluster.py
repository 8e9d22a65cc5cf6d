"""Prediction on a dask.distributed cluster: the labels of the local path, whatever the blocks,
and with a worker killed mid-run."""

import os
import signal

import numpy as np
import pytest
import torch

from napari_deepseg import SegmentationModel
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.models import build_model
from napari_deepseg.prediction import PredictionOptions

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

from napari_deepseg import cluster  # noqa: E402  (needs distributed)

OPTIONS = dict(tile_size=64, overlap=16, precision="fp32")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    network = build_model("unet", num_classes=3, in_channels=1, encoder="resnet18").eval()
    return SegmentationModel(
        network,
        architecture="unet",
        encoder="resnet18",
        num_classes=3,
        normalisation=Normalisation((0.0,), (1.0,), mode="per_image"),
    )


@pytest.fixture(scope="module")
def stack():
    return np.random.default_rng(0).normal(100, 20, (2, 150, 170)).astype(np.float32)


def _level(model, image, **options):
    # An untrained network is near 1/3 everywhere: a threshold at the median makes it matter.
    return float(np.median(model.predict_proba(image, **options).max(0)))


class InProcessClient:
    """The client API that predict_on_cluster uses, running each task at once in this process."""

    def scatter(self, data, broadcast):
        return data

    def submit(self, function, job, model_file, key, retries, pure):
        result = function(job, model_file)
        return type("Done", (), {"key": key, "result": lambda s: result, "release": lambda s: None,
                                 "done": lambda s: True})()  # fmt: skip

    def cancel(self, futures):
        pass


@pytest.fixture()
def in_process(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "as_completed", iter)
    return InProcessClient()


@pytest.mark.parametrize(
    ("block", "tiling"), [(32, (64, 16)), (50, (64, 16)), (64, (96, 40)), (1000, (64, 16))]
)
def test_blocks_give_the_local_labels_bit_for_bit(model, stack, in_process, block, tiling):
    tile, overlap = tiling
    options = dict(OPTIONS, tile_size=tile, overlap=overlap)
    level = _level(model, stack, **options)
    local = model.predict(stack, min_probability=level, **options)
    assert 0.1 < (local == 0).mean() < 0.9
    done = []
    run = PredictionOptions(progress=lambda d, t: done.append((d, t))).replace(**options)
    got = cluster.predict_on_cluster(
        model, stack, in_process, options=run, min_probability=level, block_size=block
    )
    np.testing.assert_array_equal(got, local)
    blocks = 2 * -(-150 // block) * -(-170 // block)
    assert done == [(n, blocks) for n in range(1, blocks + 1)]
    assert 1 <= len(cluster._MODELS) <= 2  # loaded once per process, the last two kept


def test_bf16_labels_agree_with_the_local_bf16_path(model, stack, in_process):
    options = dict(OPTIONS, precision="bf16")
    local = model.predict(stack, **options)
    got = cluster.predict_on_cluster(
        model, stack, in_process, options=PredictionOptions().replace(**options), block_size=50
    )
    assert (got == local).mean() >= 0.999


def test_zarr_out_is_written_by_the_tasks_in_whole_chunks(model, stack, in_process, tmp_path):
    level = _level(model, stack, **OPTIONS)
    out = zarr.create_array(str(tmp_path / "out.zarr"), shape=stack.shape, chunks=(1, 48, 48), dtype="u1")
    returned = cluster.predict_on_cluster(
        model, stack, in_process, options=PredictionOptions().replace(**OPTIONS), min_probability=level,
        out=out, block_size=60,
    )  # fmt: skip
    assert returned is out
    np.testing.assert_array_equal(out[:], model.predict(stack, min_probability=level, **OPTIONS))
    blocks = cluster.predict_on_cluster  # blocks of 60 become 96 (two chunks): 2 x 2 x 2 tasks
    wrong = zarr.create_array(str(tmp_path / "wrong.zarr"), shape=stack.shape, chunks=(2, 48, 48), dtype="u1")
    with pytest.raises(ValueError, match=r"must be 1 along the leading axes"):
        blocks(model, stack, in_process, options=PredictionOptions().replace(**OPTIONS), out=wrong)


def test_bad_arguments_are_refused_before_any_task(model, stack, in_process):
    options = PredictionOptions().replace(**OPTIONS)
    with pytest.raises(ValueError, match=r"min_probability must be in \[0, 1\]"):
        cluster.predict_on_cluster(model, stack, in_process, options=options, min_probability=2)
    with pytest.raises(
        ValueError, match=r"out has shape \(150, 170\) but the labels have shape \(2, 150, 170\)"
    ):
        cluster.predict_on_cluster(
            model, stack, in_process, options=options, out=np.zeros((150, 170), np.uint8)
        )
    with pytest.raises(TypeError, match=r"integer array that holds 3"):
        cluster.predict_on_cluster(
            model, stack, in_process, options=options, out=np.zeros(stack.shape, np.float32)
        )
    with pytest.raises(ValueError, match=r"block_size must be a positive integer"):
        cluster.predict_on_cluster(model, stack, in_process, options=options, block_size=0)


class KillOnce(distributed.WorkerPlugin):
    """Kills the worker process that starts the next block task after ``flag`` appears (once)."""

    def __init__(self, flag):
        self.flag = flag

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and "napari-deepseg-block" in str(key):
            try:
                os.unlink(self.flag)
            except FileNotFoundError:
                return
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture()
def local_cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as workers,
        distributed.Client(workers) as client,
    ):
        yield client


@pytest.mark.slow
def test_a_local_cluster_gives_the_local_labels_even_when_a_worker_is_killed(
    model, stack, local_cluster, tmp_path
):
    client = local_cluster
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # distributed's nanny gives each worker one torch thread (OMP_NUM_THREADS=1)
    try:
        level = _level(model, stack, **OPTIONS)
        local = model.predict(stack, min_probability=level, **OPTIONS)
    finally:
        torch.set_num_threads(threads)
    # numpy in and out through SegmentationModel.predict
    np.testing.assert_array_equal(
        model.predict(stack, min_probability=level, client=client, **OPTIONS), local
    )
    # zarr in, zarr out written by the workers; one worker is killed once the first block is in
    source = zarr.create_array(str(tmp_path / "image.zarr"), data=stack, chunks=(1, 40, 40))
    out = zarr.create_array(str(tmp_path / "out.zarr"), shape=stack.shape, chunks=(1, 32, 32), dtype="u1")
    flag = tmp_path / "kill"
    client.register_plugin(KillOnce(str(flag)))
    before = set(client.scheduler_info()["workers"])

    def progress(done, total):
        if done == 1:
            flag.touch()

    import dask.array as da

    cluster.predict_on_cluster(
        model, da.from_zarr(source), client, options=PredictionOptions(progress=progress).replace(**OPTIONS),
        min_probability=level, out=out, block_size=32,
    )  # fmt: skip
    assert not flag.exists()  # a worker took the flag and killed itself
    client.wait_for_workers(2, timeout=60)
    assert set(client.scheduler_info()["workers"]) != before  # the nanny started a new one
    np.testing.assert_array_equal(out[:], local)
