import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_deepseg.export import ExportError, MissingExportDependencyError, _contract, export_model
from napari_deepseg.export._contract import ProbabilityNetwork

from .conftest import blobs, network_input, small_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

SIZES = ((64, 64), (96, 128))


def _engine(model, image):
    return model.predict_proba(image, precision="fp32")[None]


def test_torchscript_matches_predict_proba_on_two_sizes(model, tmp_path):
    path = model.export(tmp_path / "model.pt", "torchscript", image=blobs(64, 96))
    extra = {"napari_deepseg.json": ""}
    loaded = torch.jit.load(path, _extra_files=extra)
    metadata = json.loads(extra["napari_deepseg.json"])
    assert metadata["input"]["size_divisor"] == 32 and metadata["input"]["min_size"] == 64
    assert metadata["input"]["normalisation"]["mode"] == "per_image"
    assert metadata["class_names"] == ["background", "nucleus", "edge"]
    assert "99.8 percentiles" in metadata["input"]["how_to_normalise"]
    for h, w in SIZES:
        image = blobs(h, w, seed=h)
        with torch.no_grad():
            out = loaded(torch.from_numpy(network_input(model, image))).numpy()
        assert out.shape == (1, 3, h, w)
        np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-5)
        assert np.abs(out - _engine(model, image)).max() < 1e-4


def test_onnx_matches_predict_proba_on_two_sizes(model, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    path = model.export(tmp_path / "model.onnx", "onnx", image=blobs(64, 96))
    proto = onnx.load(path)
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}["napari_deepseg"])
    assert metadata["output"]["values"].startswith("softmax probabilities")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, (h, w) in zip((1, 2), SIZES):
        images = [blobs(h, w, seed=h + i) for i in range(batch)]
        x = np.concatenate([network_input(model, im) for im in images])
        out = session.run(None, {"input": x})[0]
        expected = np.concatenate([_engine(model, im) for im in images])
        assert out.shape == (batch, 3, h, w)
        assert np.abs(out - expected).max() < 1e-4


@pytest.mark.parametrize("fmt, name", [("torchscript", "m.pt"), ("onnx", "m.onnx"), ("bioimageio", "m.zip")])
def test_a_mismatch_raises_and_leaves_no_file(fmt, name, tmp_path, monkeypatch):
    if fmt != "torchscript":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    if fmt == "bioimageio":
        pytest.importorskip("bioimageio.core")
    model = small_model()
    forward = ProbabilityNetwork.forward
    # A subtly wrong export (say, a lost weight): the engine still predicts right.
    monkeypatch.setattr(ProbabilityNetwork, "forward", lambda self, x: forward(self, x) * 0.99)
    with pytest.raises(ExportError, match="does not match the engine"):
        export_model(model, tmp_path / name, fmt, image=blobs(64, 64))
    assert list(tmp_path.iterdir()) == []


def test_refusals_name_the_problem_and_write_nothing(tmp_path, monkeypatch):
    model = small_model()
    with pytest.raises(ExportError, match="unknown export format 'keras'; choose one of torchscript"):
        model.export(tmp_path / "m.pt", "keras")
    with pytest.raises(ExportError, match=r"written to a \.onnx file"):
        model.export(tmp_path / "m.pt", "onnx")
    with pytest.raises(ExportError, match="height of at least 64 pixels, got 40"):
        model.export(tmp_path / "m.pt", "torchscript", image=blobs(40, 128))
    with pytest.raises(ExportError, match="does not exist"):
        model.export(tmp_path / "missing" / "m.pt", "torchscript")
    monkeypatch.setattr(_contract, "_importable", lambda name: name != "onnxruntime")
    missing = r'needs onnxruntime.*pip install "napari-deepseg\[export\]"'
    with pytest.raises(MissingExportDependencyError, match=missing):
        model.export(tmp_path / "m.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_test_tile_is_the_centre_cut_to_the_contract():
    model = small_model()
    image = blobs(300, 100)
    tile = _contract.make_test_tile(model, image)
    assert tile.raw.shape == (1, 1, 256, 96)
    np.testing.assert_array_equal(tile.raw[0, 0], image[22:278, 2:98])
    assert tile.probabilities.shape == (1, 3, 256, 96)
    default = _contract.make_test_tile(model)  # the bundled fluorescence tile
    assert default.raw.shape == (1, 1, 256, 256)


def test_export_code_imports_neither_qt_nor_napari(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import napari_deepseg.export, napari_deepseg.export.architecture\n"
        "from napari_deepseg.export._package_docs import write_cover\n"
        f"write_cover(__import__('pathlib').Path({str(tmp_path / 'c.png')!r}), "
        "np.random.rand(1, 1, 64, 96), np.random.rand(1, 3, 64, 96))\n"
        "gui = ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'superqt', 'vispy')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in gui)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "c.png").shape == (64, 128, 3)  # two 64 x 64 halves: 2:1


def test_an_exporter_that_fails_is_one_export_error_and_no_file(tmp_path, monkeypatch):
    from napari_deepseg.export import _torchscript

    def broken(*args, **kwargs):
        raise RuntimeError("Could not export Python function call 'aten::frobnicate'\nmore lines")

    monkeypatch.setattr(_torchscript, "torchscript_bytes", broken)
    with pytest.raises(ExportError, match=r"torchscript exporter failed on this network \(RuntimeError: C"):
        small_model().export(tmp_path / "m.pt", "torchscript", image=blobs(64, 64))
    assert list(tmp_path.iterdir()) == []
