import pickle

import numpy as np
import pytest
import torch

from napari_deepseg import SegmentationModel, Trainer
from napari_deepseg.model_file import ModelFileError

from .conftest import fast_config


@pytest.fixture(scope="module")
def trained(fluo_crop) -> SegmentationModel:
    image, labels = fluo_crop
    trainer = Trainer(image, labels, fast_config(iterations=3), class_names=("background", "nucleus"))
    for _ in trainer.run():
        pass
    return trainer.model


def test_save_load_reproduces_predictions_exactly(trained, fluo_crop, tmp_path):
    image, _ = fluo_crop
    path = trained.save(tmp_path / "model.safetensors")
    loaded = SegmentationModel.load(path)
    assert (loaded.architecture, loaded.encoder, loaded.num_classes, loaded.in_channels) == (
        trained.architecture,
        trained.encoder,
        2,
        1,
    )
    assert loaded.class_names == ("background", "nucleus")
    assert loaded.history == trained.history and len(loaded.history) == 3
    assert loaded.config == trained.config
    assert loaded.normalisation == trained.normalisation
    a = trained.predict_proba(image, precision="fp32")
    b = loaded.predict_proba(image, precision="fp32")
    np.testing.assert_array_equal(a, b)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    payload = _Payload()
    payload.marker = marker
    for path in (tmp_path / "evil.safetensors", tmp_path / "evil.pt"):
        with open(path, "wb") as f:
            pickle.dump({"state_dict": payload}, f)
        with pytest.raises(ModelFileError, match=str(path.name)):
            SegmentationModel.load(path)
    torch.save({"x": payload}, tmp_path / "torch.pt")
    with pytest.raises(ModelFileError, match="torch.pt"):
        SegmentationModel.load(tmp_path / "torch.pt")
    assert not marker.exists()


def test_truncated_file_gives_a_clear_error(trained, tmp_path):
    path = trained.save(tmp_path / "model.safetensors")
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 1):
        broken = tmp_path / f"cut{cut}.safetensors"
        broken.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match=f"cut{cut}"):
            SegmentationModel.load(broken)


def test_tampered_weights_are_detected(trained, tmp_path):
    path = trained.save(tmp_path / "model.safetensors")
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # flip bits inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="modified or damaged"):
        SegmentationModel.load(path)


def test_foreign_safetensors_file_and_missing_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError, match="not a napari-deepseg model"):
        SegmentationModel.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="nothere"):
        SegmentationModel.load(tmp_path / "nothere.safetensors")


def test_saving_replaces_an_existing_file_atomically(trained, tmp_path):
    path = tmp_path / "model.safetensors"
    trained.save(path)
    trained.history.append(dict(trained.history[-1], iteration=99))
    try:
        trained.save(path)
    finally:
        trained.history.pop()
    assert SegmentationModel.load(path).iterations_trained == 99
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_files_from_before_per_image_normalisation_still_load(trained, fluo_crop, tmp_path):
    image, _ = fluo_crop
    path = trained.save(tmp_path / "new.safetensors")

    def as_version_0_1(description: dict) -> None:
        description["normalisation"] = {"low": [4.0], "high": [60.0]}  # as version 0.1.0 wrote it
        description.pop("network_options")
        for key in ("max_minutes", "normalisation", "ema_decay", "regularisation_weight"):
            del description["config"][key]

    loaded = SegmentationModel.load(_rewritten(path, tmp_path, as_version_0_1))
    assert loaded.normalisation.mode == "dataset" and loaded.normalisation.low == (4.0,)
    assert loaded.config.normalisation == "dataset" and loaded.config.ema_decay == 0.0
    assert loaded.config.regularisation_weight == 0.0  # they trained without the CRF loss
    expected = trained.normalisation.__class__(low=(4.0,), high=(60.0,))
    assert loaded.normalisation == expected
    assert loaded.predict(image).shape == image.shape


def _rewritten(path, tmp_path, change) -> object:
    """A copy of the model file at ``path`` whose description ``change(description)`` edited
    (and no digest of the description, as version 0.1.0 wrote them)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    description = json.loads(metadata["model"])
    change(description)
    metadata["model"] = json.dumps(description)
    metadata.pop("model_sha256", None)
    out = tmp_path / "edited.safetensors"
    save_file(state, str(out), metadata=metadata)
    return out


def test_the_decoder_upsampling_is_recorded_and_old_files_stay_bilinear(trained, tmp_path):
    assert trained.module.options == {"upsampling": "nearest"}  # the default since 0.x: smp's choice
    path = trained.save(tmp_path / "new.safetensors")
    assert SegmentationModel.load(path).module.options == {"upsampling": "nearest"}

    # A file from before the option existed was trained with bilinear up-sampling and must load so.
    old = SegmentationModel.load(_rewritten(path, tmp_path, lambda d: d.pop("network_options")))
    assert old.module.options == {"upsampling": "bilinear"}
    assert [m.upsampling for m in old.module.decoder] == ["bilinear"] * len(old.module.decoder)
    # Same weights, another network: the predictions differ (so the field is not decorative).
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loaded, new, legacy = (
            m(x) for m in (SegmentationModel.load(path).module, trained.module, old.module)
        )
    assert torch.equal(loaded, new)
    assert float((legacy - new).abs().max()) > 0.01 * float(new.abs().max())

    # Readers of format 1 ignore the options, so only files they would misread are version 2.
    def version(p) -> str:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            return f.metadata()["format_version"]

    assert version(path) == "2"
    resaved = old.save(tmp_path / "legacy.safetensors")
    assert version(resaved) == "1"
    assert SegmentationModel.load(resaved).module.options == {"upsampling": "bilinear"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"upsampling": "bicubic"}, "upsampling must be one of"),
        ({"colour": "red"}, "does not describe a usable model"),
        (["nearest"], "'network_options' is no JSON object"),
    ],
)
def test_bad_network_options_are_refused_naming_the_file(trained, tmp_path, options, message):
    path = trained.save(tmp_path / "new.safetensors")
    bad = _rewritten(path, tmp_path, lambda d: d.update(network_options=options))
    with pytest.raises(ModelFileError, match=message) as info:
        SegmentationModel.load(bad)
    assert "edited.safetensors" in str(info.value)
