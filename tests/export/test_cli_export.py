import pytest
import torch

from napari_deepseg.cli import main

from .conftest import small_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return small_model().save(tmp_path_factory.mktemp("cli") / "model.safetensors")


def test_export_writes_a_torchscript_file_that_loads(model_file, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", "--model", str(model_file), "--format", "torchscript", "--output", str(out)]) == 0
    assert "wrote torchscript export of unet (resnet18)" in capsys.readouterr().out
    loaded = torch.jit.load(out)
    assert loaded(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize(
    "fmt, output, message",
    [
        ("keras", "m.pt", "unknown export format 'keras'; choose one of torchscript, onnx, bioimageio"),
        ("onnx", "m.pt", "the onnx export is written to a .onnx file"),
    ],
)
def test_bad_format_or_suffix_is_one_line_and_no_file(model_file, tmp_path, capsys, fmt, output, message):
    out = tmp_path / output
    assert main(["export", "--model", str(model_file), "--format", fmt, "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("napari-deepseg export: error: ") and message in err
    assert list(tmp_path.iterdir()) == []
