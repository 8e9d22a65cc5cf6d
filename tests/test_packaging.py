"""The installed plugin is found by npe2 from the root napari.yaml, and a built wheel carries it."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_npe2_discovers_the_installed_plugin():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-deepseg")
    assert manifest.display_name == "DeepSeg"
    keys = {s.key for s in manifest.contributions.sample_data}
    assert keys == {"fluorescence_tile", "he_tile"}


def test_npe2_validate_passes():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    command = [npe2] if npe2 else [sys.executable, "-m", "npe2"]
    result = subprocess.run([*command, "validate", "napari-deepseg"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_sample_commands_resolve_to_layer_data():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-deepseg")
    sample_commands = {s.command for s in manifest.contributions.sample_data}
    assert len(sample_commands) == 2
    for command in manifest.contributions.commands:
        if command.id not in sample_commands:
            continue
        module, func = command.python_name.split(":")
        layers = getattr(__import__(module, fromlist=[func]), func)()
        assert [kind for _, _, kind in layers] == ["image", "labels"]


def test_console_script_is_installed():
    script = shutil.which("napari-deepseg", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout and "predict" in result.stdout


@pytest.mark.slow
def test_wheel_contains_the_manifest_and_sample_data(tmp_path):
    pytest.importorskip("hatchling")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("napari_deepseg-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        manifest = zf.read("napari_deepseg/napari.yaml").decode()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        entry = zf.read(entry_points).decode()
    assert manifest == (ROOT / "napari.yaml").read_text()
    assert "napari_deepseg:napari.yaml" in entry
    for sample in ("fluorescence", "he"):
        for part in ("image", "strokes", "mask"):
            assert f"napari_deepseg/sample_data/{sample}_{part}.png" in names
