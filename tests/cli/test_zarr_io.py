"""``napari-deepseg predict`` (and ``train``) on zarr / OME-Zarr images: read and written chunk by
chunk, with the labels of the in-memory path."""

import tracemalloc

import numpy as np
import pytest
import tifffile
import torch

from napari_deepseg import SegmentationModel
from napari_deepseg.cli import main
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.models import build_model

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")

FP32 = ["--precision", "fp32", "--tile-size", "64", "--overlap", "16"]


def _model(tmp_path, in_channels=1, name="model.safetensors"):
    torch.manual_seed(0)
    network = build_model("unet", num_classes=3, in_channels=in_channels, encoder="resnet18").eval()
    model = SegmentationModel(
        network,
        architecture="unet",
        encoder="resnet18",
        num_classes=3,
        normalisation=Normalisation((0.0,) * in_channels, (1.0,) * in_channels, mode="per_image"),
        class_names=("a", "b", "c"),
    )
    model.save(tmp_path / name)
    return model, tmp_path / name


def _ome(path, data, axes, scale):
    from ome_zarr.writer import write_multiscales_metadata

    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", data=data, chunks=(1,) * (data.ndim - 2) + (32, 32))
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]
    write_multiscales_metadata(group, datasets, axes=axes)


def _predict(model, image, output, *extra):
    return main(
        ["predict", "--model", str(model), "--image", str(image), "--output", str(output), *FP32, *extra]
    )


def test_zarr_in_and_out_equal_the_tiff_path(tmp_path, capsys):
    network, model = _model(tmp_path)
    image = np.random.default_rng(0).normal(100, 20, (2, 150, 170)).astype(np.float32)
    top = network.predict_proba(image, precision="fp32", tile_size=64, overlap=16).max(0)
    level = f"{np.median(top):.4f}"  # an untrained network is near 1/3 everywhere
    tifffile.imwrite(tmp_path / "image.tif", image)
    zarr.create_array(str(tmp_path / "image.zarr"), data=image, chunks=(1, 40, 40))
    assert _predict(model, tmp_path / "image.tif", tmp_path / "labels.tif", "--min-probability", level) == 0
    expected = tifffile.imread(tmp_path / "labels.tif")
    assert 0.1 < (expected == 0).mean() < 0.9  # the threshold matters
    assert _predict(model, tmp_path / "image.zarr", tmp_path / "out.zarr", "--min-probability", level,
                    "--chunk-size", "64") == 0  # fmt: skip
    written = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert written.chunks == (1, 64, 64) and written.dtype == np.uint8
    np.testing.assert_array_equal(written[:], expected)
    assert "wrote labels (2, 150, 170) with classes a: " in capsys.readouterr().out
    # TIFF in, zarr out and zarr in, TIFF out: the same labels again
    assert _predict(model, tmp_path / "image.tif", tmp_path / "t.ome.zarr", "--min-probability", level) == 0
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "t.ome.zarr" / "0"))[:], expected)
    assert _predict(model, tmp_path / "image.zarr", tmp_path / "z.tif", "--min-probability", level) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "z.tif"), expected)


def test_ome_zarr_channel_axis_comes_from_its_metadata(tmp_path):
    # (c, z, y, x) with 2 channels and 2 planes: without the metadata, the axis nearest to (y, x)
    # with 2 entries (z) would be taken for the channels.
    model, path = _model(tmp_path, in_channels=2)
    image = np.random.default_rng(1).integers(0, 3000, (2, 2, 96, 80), dtype=np.uint16)
    image[1] //= 4  # the channels differ, so mixing them up shows
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    _ome(tmp_path / "image.ome.zarr", image, axes, [1.0, 3.0, 0.2, 0.2])
    options = dict(precision="fp32", tile_size=64, overlap=16)
    level = float(np.median(model.predict_proba(image, channel_axis=0, **options).max(0)))
    expected = model.predict(image, channel_axis=0, min_probability=level, **options)
    wrong = model.predict(image, channel_axis=1, min_probability=level, **options)
    assert expected.shape == (2, 96, 80) and (expected != wrong).mean() > 0.01
    assert (
        _predict(
            path, tmp_path / "image.ome.zarr", tmp_path / "labels.ome.zarr", "--min-probability", str(level)
        )
        == 0
    )
    group = zarr.open_group(str(tmp_path / "labels.ome.zarr"), mode="r")
    np.testing.assert_array_equal(group["0"][:], expected)
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [3.0, 0.2, 0.2]
    assert [p["class"] for p in group.attrs["ome"]["image-label"]["properties"]] == ["a", "b", "c"]


def test_train_reads_zarr_images_and_labels(tmp_path, fluo_crop):
    image, labels = fluo_crop
    zarr.create_array(str(tmp_path / "image.zarr"), data=image, chunks=(32, 32))
    zarr.create_array(str(tmp_path / "labels.zarr"), data=labels, chunks=(32, 32))
    args = ["train", "--image", str(tmp_path / "image.zarr"), "--labels", str(tmp_path / "labels.zarr")]
    args += ["--iterations", "2", "--patch-size", "32", "--batch-size", "1", "--no-pretrained", "--encoder"]
    args += [
        "resnet18",
        "--validation-fraction",
        "0",
        "--precision",
        "fp32",
        "--output",
        str(tmp_path / "m.st"),
    ]
    assert main(args) == 0
    assert SegmentationModel.load(tmp_path / "m.st").iterations_trained == 2


def test_memory_stays_bounded_for_a_zarr_image(tmp_path):
    # 8192 x 2048 float32 (64 MB) through a one-layer network: the prediction holds a band of
    # tile rows (tile x width x classes floats) and a few chunks, never the image. Dataset bounds:
    # per-image bounds add one fixed sample of at most IMAGE_SAMPLES pixels (~32 MB) at any size.
    from napari_deepseg.image_io import create_labels_file, read_image

    height, width = 8192, 2048
    store = zarr.create_array(
        str(tmp_path / "big.zarr"), shape=(height, width), dtype="f4", chunks=(512, 512)
    )
    rng = np.random.default_rng(2)
    for y in range(0, height, 1024):
        store[y : y + 1024] = rng.random((1024, width), dtype=np.float32)
    torch.manual_seed(0)
    model = SegmentationModel(
        torch.nn.Conv2d(1, 2, 3, padding=1),
        architecture="unet",
        encoder="resnet18",
        num_classes=2,
        normalisation=Normalisation((0.0,), (1.0,)),
    )
    options = dict(precision="fp32", tile_size=512, overlap=32)
    image = read_image(tmp_path / "big.zarr")
    expected = model.predict(np.asarray(image[:1200]), **options)  # also imports what predict needs
    out = create_labels_file(tmp_path / "labels.zarr", (height, width), np.uint8, chunk=1024)
    tracemalloc.start()
    try:
        model.predict(image, out=out, **options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    image_bytes = height * width * 4
    assert peak < image_bytes / 2, f"peak {peak / 2**20:.0f} MiB for a {image_bytes / 2**20:.0f} MiB image"
    labels = zarr.open_array(str(tmp_path / "labels.zarr"), mode="r")
    assert 0.2 < (labels[:1000] == 1).mean() < 0.8  # both classes occur
    # rows above the second tile row see the same tiles in either run
    np.testing.assert_array_equal(labels[:400], expected[:400])


@pytest.fixture()
def bad(tmp_path):
    _, model = _model(tmp_path)
    zarr.create_array(str(tmp_path / "image.zarr"), data=np.zeros((40, 48), np.float32) + 1)
    (tmp_path / "empty.zarr").mkdir()
    zarr.open_group(str(tmp_path / "nothing.zarr"), mode="w")
    (tmp_path / "notes.zarr").mkdir()
    (tmp_path / "notes.zarr" / "mine.txt").write_text("keep")
    return tmp_path, model


BAD = {
    "missing": (["--image", "missing.zarr"], r"missing\.zarr' does not exist"),
    "no store": (["--image", "empty.zarr"], r"cannot read zarr image .*empty\.zarr"),
    "empty group": (
        ["--image", "nothing.zarr"],
        r"without OME-Zarr multiscales; name one of its arrays \(none\)",
    ),
    "level": (["--level", "2"], r"single zarr array: it has no --level 2"),
    "level -1": (["--level", "-1"], r"--level must be 0 or more"),
    "not a store": (["--output", "notes.zarr"], r"notes\.zarr' exists and is not a zarr store"),
    "over the image": (["--output", "image.zarr"], r"would overwrite the image"),
    "suffix": (["--output", "labels.n5"], r"unsupported output format '\.n5'.*\.zarr or \.ome\.zarr"),
    "chunk": (["--output", "o.zarr", "--chunk-size", "8"], r"--chunk-size must be at least 32, got 8"),
    "workers 0": (["--workers", "0"], r"--workers must be at least 1"),
    "cluster probabilities": (["--workers", "2", "--probabilities", "p.tif"], r"not written on a cluster"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_zarr_paths_give_one_line(bad, capsys, case):
    folder, model = bad
    extra, message = BAD[case]
    argv = {"--image": "image.zarr", "--output": "out.zarr"}
    rest = []
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in argv:
            argv[flag] = value
        else:
            rest += [flag, value if flag in ("--level", "--chunk-size", "--workers") else str(folder / value)]
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    code = main(["predict", "--model", str(model), "--image", str(folder / argv["--image"]),
                 "--output", str(folder / argv["--output"]), *rest])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert re_search(message, err), err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written or removed


def re_search(pattern, text):
    import re

    return re.search(pattern, text) is not None


@pytest.mark.slow
def test_predict_on_a_local_cluster_equals_the_local_cli(tmp_path, capsys):
    pytest.importorskip("distributed")
    import os

    _, model = _model(tmp_path)
    image = np.random.default_rng(3).normal(100, 20, (120, 200)).astype(np.float32)
    tifffile.imwrite(tmp_path / "image.tif", image)  # memory-mapped: the workers map it themselves
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # what --workers 2 gives each worker
    try:
        assert _predict(model, tmp_path / "image.tif", tmp_path / "local.tif") == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    argv = ["--workers", "2", "--block-size", "64", "--chunk-size", "32"]
    assert _predict(model, tmp_path / "image.tif", tmp_path / "labels.ome.zarr", *argv) == 0
    captured = capsys.readouterr()
    assert "wrote labels (120, 200)" in captured.out and "8/8" in captured.err  # 2 x 4 blocks
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "labels.ome.zarr" / "0"))[:], tifffile.imread(tmp_path / "local.tif")
    )
