import numpy as np
import pytest
import tifffile

from napari_deepseg.image_io import create_labels_file, read_image, write_image


def test_tiff_round_trips_any_shape_and_dtype(tmp_path):
    data = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7) / 7
    path = write_image(tmp_path / "sub" / "probabilities.tiff", data)
    assert path == tmp_path / "sub" / "probabilities.tiff"
    back = read_image(path)
    assert back.dtype == np.float32 and np.array_equal(back, data)


def test_uncompressed_tiff_is_memory_mapped(tmp_path):
    data = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50)
    tifffile.imwrite(tmp_path / "image.tif", data)
    back = read_image(tmp_path / "image.tif")
    assert isinstance(back, np.memmap) and np.array_equal(back, data)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_round_trips_2d_labels(tmp_path, dtype):
    step = 60 if dtype == np.uint8 else 16000  # uint16 values above 255 must survive
    labels = (np.arange(12 * 9).reshape(12, 9) % 5 * step).astype(dtype)
    back = read_image(write_image(tmp_path / "labels.PNG", labels))
    assert back.dtype == dtype and back.shape == (12, 9) and np.array_equal(back, labels)


@pytest.mark.parametrize("data", [np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.float32)])
def test_png_refuses_what_it_cannot_hold(tmp_path, data):
    with pytest.raises(ValueError, match=r"PNG output holds 2D 8/16-bit labels only; use \.tif"):
        write_image(tmp_path / "out.png", data)


def test_unknown_output_suffix_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported output format '\.bmp'.*use \.tif or \.png"):
        write_image(tmp_path / "out.bmp", np.zeros((4, 4), np.uint8))
    assert not (tmp_path / "out.bmp").exists()


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "notes.xyz").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image .*notes.xyz"):
        read_image(tmp_path / "notes.xyz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.tif")


def test_streamed_labels_file_is_a_tiff_written_in_place(tmp_path):
    labels = create_labels_file(tmp_path / "deep" / "labels.tif", (6, 8), np.uint8)
    labels[2:4] = 3
    labels.flush()
    del labels
    back = read_image(tmp_path / "deep" / "labels.tif")
    assert back.shape == (6, 8) and int(back.sum()) == 3 * 2 * 8
    with pytest.raises(ValueError, match=r"streamed labels need a \.tif or \.zarr file"):
        create_labels_file(tmp_path / "labels.png", (6, 8), np.uint8)


# zarr and OME-Zarr (the optional ``zarr`` extra)


def _ome_image(path, data, axes, scale):
    """An OME-Zarr image with two levels written by ome-zarr itself (the second one at half size)."""
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    group = zarr.open_group(str(path), mode="w")
    half = data[..., ::2, ::2]
    group.create_array("0", data=data, chunks=(1,) * (data.ndim - 2) + (32, 32))
    group.create_array("1", data=np.ascontiguousarray(half), chunks=(1,) * (data.ndim - 2) + (32, 32))
    datasets = [
        {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [*scale[:-2], *s]}]}
        for k, s in enumerate([scale[-2:], [2 * v for v in scale[-2:]]])
    ]
    write_multiscales_metadata(group, datasets, axes=axes)
    return half


def test_zarr_arrays_open_lazily_with_their_values(tmp_path):
    pytest.importorskip("zarr")
    import zarr

    data = np.arange(3 * 70 * 90, dtype=np.uint16).reshape(3, 70, 90)
    zarr.create_array(str(tmp_path / "image.zarr"), data=data, chunks=(1, 32, 32))
    back = read_image(tmp_path / "image.zarr")
    assert type(back).__module__.startswith("dask") and back.chunksize == (1, 32, 32)
    assert np.array_equal(np.asarray(back[1, 10:40, 5:77]), data[1, 10:40, 5:77])
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("only", data=data)
    assert np.array_equal(np.asarray(read_image(tmp_path / "group.zarr")), data)
    group.create_array("second", data=data)
    with pytest.raises(ValueError, match=r"without OME-Zarr multiscales.*\(only, second\)"):
        read_image(tmp_path / "group.zarr")
    assert np.array_equal(np.asarray(read_image(tmp_path / "group.zarr" / "second")), data)
    with pytest.raises(ValueError, match=r"single zarr array: it has no --level 1"):
        read_image(tmp_path / "image.zarr", level=1)
    with pytest.raises(FileNotFoundError, match=r"missing\.zarr' does not exist"):
        read_image(tmp_path / "missing.zarr")


def test_ome_zarr_levels_axes_and_channel_axis(tmp_path):
    pytest.importorskip("ome_zarr")
    from napari_deepseg.image_io import open_image

    data = np.random.default_rng(0).integers(0, 4000, (2, 3, 64, 96), dtype=np.uint16)
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    half = _ome_image(tmp_path / "image.ome.zarr", data, axes, [1.0, 2.0, 0.5, 0.5])
    full = open_image(tmp_path / "image.ome.zarr")
    assert full.channel_axis == 0 and [a["name"] for a in full.axes] == ["c", "z", "y", "x"]
    assert full.scale == (1.0, 2.0, 0.5, 0.5) and np.array_equal(np.asarray(full.data), data)
    level = open_image(tmp_path / "image.ome.zarr", level=1)
    assert level.scale == (1.0, 2.0, 1.0, 1.0) and np.array_equal(np.asarray(level.data), half)
    with pytest.raises(ValueError, match=r"has levels 0 to 1, not 2"):
        open_image(tmp_path / "image.ome.zarr", level=2)
    with pytest.raises(ValueError, match=r"--level 1 needs a multiscale OME-Zarr image"):
        open_image(tmp_path / "missing.tif", level=1)


def test_ome_zarr_labels_carry_the_image_axes_and_class_names(tmp_path):
    pytest.importorskip("ome_zarr")
    import zarr

    from napari_deepseg.image_io import open_image

    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    _ome_image(tmp_path / "image.ome.zarr", np.zeros((2, 64, 96), np.uint8), axes, [1.0, 0.25, 0.5])
    image = open_image(tmp_path / "image.ome.zarr")
    out = create_labels_file(
        tmp_path / "labels.ome.zarr", (64, 96), np.uint8, chunk=32, image=image, class_names=("bg", "cell")
    )
    assert out.chunks == (32, 32) and out.shape == (64, 96) and int(np.asarray(out).max()) == 0
    out[10:20, 30:40] = 2
    attrs = zarr.open_group(str(tmp_path / "labels.ome.zarr"), mode="r").attrs.asdict()
    multiscale = attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["y", "x"]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.25, 0.5]
    assert attrs["ome"]["image-label"]["properties"] == [
        {"label-value": 1, "class": "bg"},
        {"label-value": 2, "class": "cell"},
    ]
    back = open_image(tmp_path / "labels.ome.zarr")
    assert back.channel_axis is None and int(np.asarray(back.data).sum()) == 2 * 100
    (tmp_path / "notes.zarr").mkdir()
    (tmp_path / "notes.zarr" / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"notes\.zarr' exists and is not a zarr store"):
        create_labels_file(tmp_path / "notes.zarr", (64, 96), np.uint8)
    assert (tmp_path / "notes.zarr" / "mine.txt").read_text() == "keep me"


def test_a_missing_zarr_extra_is_named(tmp_path, monkeypatch):
    import importlib.util

    from napari_deepseg.zarr_io import MissingZarrError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "zarr" else real(name, *a)
    )
    with pytest.raises(
        MissingZarrError, match=r'needs zarr.*install the zarr extra: pip install "napari-deepseg\[zarr\]"'
    ):
        read_image(tmp_path / "image.zarr")
