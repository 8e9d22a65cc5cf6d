"""Bad files and options on the command line: exit code 1, exactly one line on stderr that
names the problem, no traceback, no output file written and the input files left as they were."""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_deepseg import Trainer
from napari_deepseg.cli import build_parser, main
from napari_deepseg.cli._options import config_from_args

from ..conftest import fast_config

TRAIN = ["--iterations", "1", "--patch-size", "32", "--batch-size", "1", "--no-pretrained"]
TRAIN += ["--encoder", "resnet18", "--validation-fraction", "0", "--precision", "fp32"]


def _labels(shape=(40, 48), dtype=np.uint8):
    labels = np.zeros(shape, dtype)
    labels[2:18, 2:40], labels[22:38, 2:40] = 1, 2
    return labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Input files of every kind, and a trained grey model."""
    d = tmp_path_factory.mktemp("cli_bad_input")
    image = (np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8)
    labels = _labels()
    files = {
        "image.tif": image,
        "labels.tif": labels,
        "float_labels.tif": labels.astype(np.float32),
        "negative_labels.tif": labels.astype(np.int16) - 1,
        "zero_labels.tif": labels * 0,
        "one_class.tif": (labels > 0).astype(np.uint8),
        "many_classes.tif": np.where(labels == 2, 5000, labels.astype(np.uint16)),
        "transposed_labels.tif": np.ascontiguousarray(labels.T),
        "nan_image.tif": np.where(labels == 1, np.nan, image).astype(np.float32),
        "inf_image.tif": np.where(labels == 1, -np.inf, image).astype(np.float32),
        "empty.tif": np.zeros((0, 48), np.uint8),
        "six_d.tif": np.zeros((1, 1, 1, 1, 40, 48), np.uint8),
        "stack.tif": np.stack([image, image]),
    }
    for name, data in files.items():
        tifffile.imwrite(d / name, data)
    iio.imwrite(d / "rgba.png", np.dstack([image] * 4))
    iio.imwrite(d / "rgb_labels.png", np.dstack([labels] * 3))
    (d / "text.tif").write_text("hello")
    (d / "zero_bytes.tif").write_bytes(b"")
    (d / "text.png").write_text("hello")
    np.save(d / "array.npy", image)
    (d / "folder.tif").mkdir()
    (d / "junk.safetensors").write_bytes(b"not a model")
    trainer = Trainer(
        image, labels, fast_config(iterations=1, patch_size=32, batch_size=1, encoder="resnet18")
    )
    list(trainer.run())
    trainer.model.save(d / "model.safetensors")
    return d


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _train(image="image.tif", labels="labels.tif", *extra):
    return lambda d: [
        "train",
        *("--image", str(d / image), "--labels", str(d / labels)),
        *("--output", str(d / "model.out")),
        *TRAIN,
        *extra,
    ]


def _predict(image="image.tif", *extra, output="out.tif"):
    return lambda d: [
        "predict",
        "--model",
        str(d / "model.safetensors"),
        "--image",
        str(d / image),
        "--output",
        str(d / output),
        *extra,
    ]


# (option, value, what the one line must say) of training options past their limits
TRAIN_OPTION_CASES = {
    "channel axis": ("--channel-axis", "5", r"channel_axis 5 is out of range"),
    "too many names": ("--class-names", "a,b,c", r"3 class names given"),
    "empty names": ("--class-names", "a,", r"needs a name for every class"),
    "device meta": ("--device", "meta", r"device must be 'auto'.*'meta'"),
    "device cuda:x": ("--device", "cuda:x", r"device must be"),
    "seed -1": ("--seed", "-1", r"seed must be an integer"),
    "huge patch": ("--patch-size", "100000", r"patch_size must be at most 4096"),
    "batch 0": ("--batch-size", "0", r"batch_size must be a positive"),
    "huge batch": ("--batch-size", "5000", r"batch_size must be at most 1024"),
    "learning rate inf": ("--learning-rate", "inf", r"learning_rate must be > 0"),
    "learning rate nan": ("--learning-rate", "nan", r"learning_rate must be > 0"),
    "minutes -1": ("--minutes", "-1", r"max_minutes must be > 0"),
    "iterations -1": ("--iterations", "-1", r"iterations must be a positive"),
    "EMA 1": ("--ema-decay", "1", r"ema_decay must be in \[0, 1\)"),
    "validation 1": ("--validation-fraction", "1", r"validation_fraction"),
    "encoder": ("--encoder", "nope", r"encoder 'nope' is not available"),
}


# (argv builder, what the one line must say)
CASES = {
    "float labels": (_train(labels="float_labels.tif"), r"labels must be integers; got float32"),
    "negative labels": (_train(labels="negative_labels.tif"), r"labels must be >= 0 .*found -1"),
    "labels all zero": (_train(labels="zero_labels.tif"), r"labels contain no labelled pixel"),
    "one class": (_train(labels="one_class.tif"), r"only class 1 is painted"),
    "5000 classes": (_train(labels="many_classes.tif"), r"class 5000 but at most 1000 classes"),
    "labels shape": (_train(labels="transposed_labels.tif"), r"same spatial shape; got image \(40, 48\)"),
    "RGB labels": (_train(labels="rgb_labels.png"), r"same spatial shape"),
    "NaN image": (_train("nan_image.tif"), r"image contains \d+ NaN or infinite value"),
    "inf image": (_train("inf_image.tif"), r"image contains \d+ NaN or infinite value"),
    "empty image": (_train("empty.tif"), r"must not be empty; got image \(0, 48\)"),
    "6D image": (_train("six_d.tif", "six_d.tif"), r"image must have 2 to 5 dimensions"),
    "text as TIFF": (_train("text.tif"), r"cannot read image .*text\.tif.*not a TIFF file"),
    "zero-byte TIFF": (_train("zero_bytes.tif"), r"cannot read image .*zero_bytes\.tif"),
    "text as PNG": (_train("text.png"), r"cannot read image .*text\.png"),
    "NumPy file": (_train("array.npy"), r"cannot read image .*array\.npy"),
    "folder as image": (_train("folder.tif"), r"folder\.tif' is a directory, not an image file"),
    "missing image": (_train("missing.tif"), r"missing\.tif' does not exist"),
    "continue missing": (
        lambda d: [*_train()(d), "--continue-from", str(d / "missing.safetensors")],
        r"missing\.safetensors' does not exist",
    ),
    "continue junk": (
        lambda d: [*_train()(d), "--continue-from", str(d / "junk.safetensors")],
        r"junk\.safetensors.* not a napari-deepseg model file",
    ),
    "labels count": (
        lambda d: [*_train()(d), "--labels", str(d / "labels.tif")],
        r"give one --labels per --image \(1 images, 2 labels\)",
    ),
    "RGBA on a grey model": (
        _predict("rgba.png"),
        r"trained on 1-channel images but this image looks like RGB",
    ),
    "predict NaN": (_predict("nan_image.tif"), r"NaN or infinite"),
    "predict empty": (_predict("empty.tif"), r"the image is empty \(shape \(0, 48\)\)"),
    "predict 6D": (_predict("six_d.tif"), r"image must have 2 to 5 dimensions"),
    "predict text": (_predict("text.tif"), r"cannot read image .*not a TIFF file"),
    "min probability 2": (
        _predict("image.tif", "--min-probability", "2"),
        r"min.probability must be in \[0, 1\], got 2",
    ),
    "min probability nan": (
        _predict("image.tif", "--min-probability", "nan"),
        r"min.probability must be in \[0, 1\], got nan",
    ),
    "tile 0": (_predict("image.tif", "--tile-size", "0"), r"tile_size must be at least 32"),
    "overlap": (_predict("image.tif", "--overlap", "5000"), r"overlap must be in \[0, tile_size\)"),
    "tile batch 0": (_predict("image.tif", "--batch-size", "0"), r"batch_size must be >= 1"),
    "predict channel axis": (
        _predict("image.tif", "--channel-axis", "-3"),
        r"channel_axis -3 is out of range",
    ),
    "predict device": (_predict("image.tif", "--device", "meta"), r"device must be"),
    "output suffix": (_predict("image.tif", output="out.jpg"), r"unsupported output format '\.jpg'"),
    "PNG of a stack": (_predict("stack.tif", output="out.png"), r"PNG output holds 2D labels only"),
    "probabilities PNG": (
        _predict("image.tif", "--probabilities", "probabilities.png"),
        r"--probabilities are written as TIFF",
    ),
    "model is an image": (
        lambda d: [
            "predict",
            "--model",
            str(d / "image.tif"),
            "--image",
            str(d / "image.tif"),
            "--output",
            str(d / "o.tif"),
        ],
        r"image\.tif' is not a napari-deepseg model file",
    ),
}

CASES.update(
    {
        name: (_train("image.tif", "labels.tif", option, value), message)
        for name, (option, value, message) in TRAIN_OPTION_CASES.items()
    }
)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_1_with_one_line_and_leaves_every_file(folder, capsys, case):
    build, message = CASES[case]
    before = _digests(folder)
    capsys.readouterr()
    code = main(build(folder))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1, err
    assert lines[0].startswith(("napari-deepseg train: error: ", "napari-deepseg predict: error: "))
    assert re.search(message, lines[0]), lines[0]
    assert _digests(folder) == before  # nothing written, nothing changed
    assert not (folder / "out.tif").exists() and not (folder / "model.out").exists()


def test_an_unreadable_output_folder_fails_after_training_with_one_line(folder, capsys):
    code = main([*_train()(folder), "--output", str(folder / "folder.tif")])
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 1 and len(lines) == 1
    assert "could not save the model to" in lines[0] and "folder.tif" in lines[0]


def test_argparse_errors_exit_2_with_the_problem_last(folder, capsys):
    for argv in (
        [*_train()(folder), "--iterations", "x"],
        [*_predict()(folder), "--tile-size", "1.5"],
        ["train", "--image", str(folder / "image.tif")],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("napari-deepseg")


def test_the_module_entry_point_prints_no_traceback(folder):
    result = subprocess.run(
        [sys.executable, "-m", "napari_deepseg.cli", *_predict("text.tif")(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert lines[-1].startswith("napari-deepseg predict: error: cannot read image")


# The numeric training options: parsed into the config when its rules allow them (what a run
# would use), else the run exits 1 with one line naming the field.
NUMERIC_OPTIONS = {
    "--patch-size": ("patch_size", st.integers(-10, 5000)),
    "--batch-size": ("batch_size", st.integers(-3, 1100)),
    "--seed": ("seed", st.integers(-(2**64), 2**64)),
    "--learning-rate": ("learning_rate", st.floats(allow_nan=True, allow_infinity=True)),
    "--minutes": ("max_minutes", st.floats(allow_nan=True, allow_infinity=True)),
    "--ema-decay": ("ema_decay", st.floats(-1, 2)),
    "--validation-fraction": ("validation_fraction", st.floats(-1, 2)),
}
RULES = {
    "patch_size": lambda v: 32 <= v <= 4096,
    "batch_size": lambda v: 1 <= v <= 1024,
    "seed": lambda v: 0 <= v <= 2**63 - 1,
    "learning_rate": lambda v: 0 < v < math.inf,
    "max_minutes": lambda v: v > 0,
    "ema_decay": lambda v: 0 <= v < 1,
    "validation_fraction": lambda v: 0 <= v < 1,
}


@settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_numeric_options_are_taken_or_refused_in_one_line(folder, capsys, data):
    option = data.draw(st.sampled_from(sorted(NUMERIC_OPTIONS)))
    field, values = NUMERIC_OPTIONS[option]
    value = data.draw(values)
    argv = [*_train()(folder), f"{option}={value!r}"]  # "=": "-1e-05" is no option name
    if RULES[field](value):
        config = config_from_args(build_parser().parse_args(argv))
        assert getattr(config, field) == value
        return
    capsys.readouterr()
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0]
    assert not (folder / "model.out").exists()


def test_an_interrupted_prediction_leaves_no_labels_file(folder, capsys, monkeypatch):
    from napari_deepseg import SegmentationModel

    def interrupted(self, image, *args, out=None, **kwargs):
        out[0] = 1  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(SegmentationModel, "predict", interrupted)
    assert main(_predict(output="interrupted.tif")(folder)) == 130
    assert not (folder / "interrupted.tif").exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"


def test_a_nan_found_only_in_a_tile_leaves_no_labels_file(folder, capsys):
    # 1500 x 1500: the normalisation samples every second pixel and misses (1, 1); a tile finds it
    # after the streamed labels file was created.
    image = np.random.default_rng(1).random((1500, 1500), dtype=np.float32)
    image[1, 1] = np.nan
    tifffile.imwrite(folder / "stray_nan.tif", image)
    code = main(_predict("stray_nan.tif", "--tile-size", "512", output="stray_nan_out.tif")(folder))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "contains NaN or infinite values" in err[-1], err
    assert not (folder / "stray_nan_out.tif").exists()


@pytest.mark.parametrize("found", [None, "2.18.2"], ids=["missing", "zarr 2"])
def test_a_missing_or_old_zarr_is_one_line_naming_the_extra(folder, capsys, monkeypatch, found):
    import importlib.metadata
    import importlib.util

    real_find_spec, real_version = importlib.util.find_spec, importlib.metadata.version

    def find_spec(name, *args):
        return None if name == "zarr" and found is None else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(importlib.metadata, "version", lambda n: found if n == "zarr" else real_version(n))
    before = _digests(folder)
    code = main(_predict(output="missing.zarr")(folder))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert 'pip install "napari-deepseg[zarr]"' in err.strip().splitlines()[-1]
    assert _digests(folder) == before and not (folder / "missing.zarr").exists()


@pytest.mark.parametrize("option", ["--output", "--probabilities"])
def test_an_output_that_is_the_image_is_refused_and_the_image_kept(folder, capsys, option):
    before = _digests(folder)
    argv = _predict(output="out_same.tif")(folder)
    if option == "--output":
        argv[argv.index("--output") + 1] = str(folder / "image.tif")
    else:
        argv += ["--probabilities", str(folder / "image.tif")]
    assert main(argv) == 1
    assert "would overwrite the image" in capsys.readouterr().err.strip().splitlines()[-1]
    assert _digests(folder) == before
