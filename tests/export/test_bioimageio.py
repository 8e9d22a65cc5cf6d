import zipfile

import numpy as np
import pytest
import yaml

from napari_deepseg.data.normalisation import Normalisation

from .conftest import blobs, small_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # bioimageio.core loads it

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    model = small_model()
    path = tmp_path_factory.mktemp("bioimageio") / "model.zip"
    model.export(path, "bioimageio", image=blobs(64, 96), authors=["A. Person"], license="MIT")
    return path


@pytest.mark.slow
def test_package_passes_bioimageio_core_test_offline(package):
    from bioimageio.core import test_model

    summary = test_model(package, devices=["cpu"])
    failed = [d.name for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    reproduced = [d.name for d in summary.details if d.name.startswith("Reproduce test outputs")]
    assert len(reproduced) == 3  # pytorch_state_dict, torchscript and onnx


def test_package_declares_processing_axes_citations_and_docs(package):
    with zipfile.ZipFile(package) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
        test_input = np.load(z.open("test_input.npy"))
        test_output = np.load(z.open("test_output.npy"))
    assert {"weights.pt", "weights_torchscript.pt", "weights.onnx", "cover.png", "README.md"} <= names
    assert rdf["format_version"].startswith("0.5.") and rdf["license"] == "MIT"
    assert rdf["authors"] == [{"name": "A. Person"}]
    assert "10.1007/978-3-319-24574-4_28" in [c["doi"] for c in rdf["cite"]]  # U-Net
    raw, probabilities = rdf["inputs"][0], rdf["outputs"][0]
    assert [a["type"] for a in raw["axes"]] == ["batch", "channel", "space", "space"]
    assert raw["axes"][2]["size"] == {"min": 64, "step": 32}
    steps = {p["id"]: p.get("kwargs") for p in raw["preprocessing"]}
    assert steps["scale_range"] == {"axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.8}
    assert steps["scale_linear"] == {"gain": 4.0, "offset": -2.0}
    assert probabilities["axes"][1]["channel_names"] == ["background", "nucleus", "edge"]
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["encoder"] == "resnet18"
    assert "## Validation" in readme and "multiple of 32" in readme
    assert test_input.shape == (1, 1, 64, 96) and test_output.shape == (1, 3, 64, 96)
    np.testing.assert_allclose(test_output.sum(axis=1), 1, atol=1e-5)


def test_dataset_bounds_become_scale_linear_that_matches_the_normalisation():
    from bioimageio.spec.model import v0_5 as bio

    from napari_deepseg.export._bioimageio import _preprocessing

    norm = Normalisation(low=(10.0, -3.0), high=(200.0, 5.0), mode="dataset")
    linear, clip = _preprocessing(bio, norm)
    assert (linear.id, clip.id) == ("scale_linear", "clip")
    x = np.random.default_rng(0).normal(50, 60, (2, 8, 8))
    gain = np.asarray(linear.kwargs.gain)[:, None, None]
    offset = np.asarray(linear.kwargs.offset)[:, None, None]
    np.testing.assert_allclose(
        np.clip(x * gain + offset, clip.kwargs.min, clip.kwargs.max), norm.apply(x), rtol=1e-5
    )
