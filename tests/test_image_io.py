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
    with pytest.raises(ValueError, match=r"streamed labels need a \.tif file"):
        create_labels_file(tmp_path / "labels.png", (6, 8), np.uint8)
