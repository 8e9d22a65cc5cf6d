import subprocess
import sys

ENGINE_MODULES = [
    "napari_deepseg",
    "napari_deepseg.models",
    "napari_deepseg.data",
    "napari_deepseg.training",
    "napari_deepseg.prediction",
    "napari_deepseg.model_file",
    "napari_deepseg.cli",
    "napari_deepseg.sample_data",
    "napari_deepseg.data.strokes",
]
GUI_PACKAGES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy")


def test_engine_imports_neither_qt_nor_napari():
    code = (
        f"import importlib, sys\nfor m in {ENGINE_MODULES!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI_PACKAGES!r})\n"
        "print(bad)\nassert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
