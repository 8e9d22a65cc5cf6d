"""What the napari hub and pip see: the manifest npe2 finds, the project metadata, the declared
dependencies against the imports, and a built wheel."""

import ast
import importlib.metadata
import importlib.resources
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "napari_deepseg"
HUB_URLS = ("Source Code", "Bug Tracker", "Documentation", "User Support")
QT_BINDINGS = {"pyqt5", "pyqt6", "pyside2", "pyside6"}
# Third-party modules that the package imports without declaring them, and why that is safe. Each may only
# be imported inside a function (checked below), never when a module loads.
UNDECLARED_OPTIONAL = {
    "scipy": "simulate_strokes (sample-data making, tests and benchmarks: testing / bench extras)",
    "dask": "only reached for a dask array input, which napari (a dependency) brings",
}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def test_package_manifest_is_a_real_file_identical_to_the_root_copy():
    package_copy = SRC / "napari.yaml"
    assert not package_copy.is_symlink(), "a symlink breaks on Windows checkouts and in some sdists"
    assert package_copy.read_bytes() == (ROOT / "napari.yaml").read_bytes()
    installed = importlib.resources.files("napari_deepseg") / "napari.yaml"
    assert installed.read_bytes() == package_copy.read_bytes()


def test_npe2_discovers_the_installed_plugin():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-deepseg")
    assert manifest.display_name == "DeepSeg"
    assert {w.display_name for w in manifest.contributions.widgets} == {"Train", "Predict"}
    samples = {s.key: s.display_name for s in manifest.contributions.sample_data}
    assert samples == {
        "fluorescence_tile": "Fluorescence nuclei + strokes",
        "he_tile": "H&E nuclei + strokes",
    }
    assert [r.filename_patterns for r in manifest.contributions.readers] == [["*.safetensors"]]


def test_npe2_validate_passes():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    command = [npe2] if npe2 else [sys.executable, "-m", "npe2"]
    for target in ("napari-deepseg", str(SRC / "napari.yaml")):
        result = subprocess.run([*command, "validate", target], capture_output=True, text=True)
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


def test_license_metadata_matches_the_license_file():
    project = _pyproject()["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, napari-deepseg developers" in text
    # PEP 639: a license expression and a "License ::" classifier must not both be given.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert "Framework :: napari" in project["classifiers"]


def test_project_urls_have_what_the_hub_shows():
    urls = _pyproject()["project"]["urls"]
    for key in HUB_URLS:
        assert urls[key].startswith("https://"), key
    assert urls["Source Code"].startswith("https://github.com/")
    assert urls["Bug Tracker"] == urls["Source Code"] + "/issues"


def test_no_qt_binding_is_a_hard_dependency():
    # napari-plugin-checks' rule: a pinned binding breaks conda and PySide users; bindings go in extras.
    project = _pyproject()["project"]
    assert not {_name(r) for r in project["dependencies"]} & QT_BINDINGS
    testing = {_name(r) for r in project["optional-dependencies"]["testing"]}
    assert "napari" in testing and "napari[pyqt6]" in project["optional-dependencies"]["testing"]


def _third_party_imports() -> dict[str, list[tuple[str, bool]]]:
    """Top-level module name -> [(file:line, imported when the module loads)] over src/."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        at_load = {id(node) for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))}
        for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            at_load -= {id(n) for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("napari_deepseg", "__future__"):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.setdefault(top, []).append((where, id(node) in at_load))
    return found


# Extras that install tools around the package, not features of it.
TOOL_EXTRAS = {"all", "testing", "lint", "bench"}


def test_every_imported_distribution_is_declared():
    project = _pyproject()["project"]
    declared = {_name(r) for r in project["dependencies"]}
    optional = {
        _name(r)
        for extra, requirements in project["optional-dependencies"].items()
        if extra not in TOOL_EXTRAS
        for r in requirements
    }
    distributions = importlib.metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"torch", "qtpy", "superqt", "numpy"} <= set(imports)  # the scan sees real imports
    for module, places in imports.items():
        names = {_name(d) for d in distributions.get(module, [module])}
        if module in UNDECLARED_OPTIONAL or (names & optional and not names & declared):
            # A feature's extra (export, zarr, ...) is imported only where the feature runs, so
            # that the package imports without it and can name the extra to install.
            assert not [where for where, at_load in places if at_load], (module, places)
            continue
        assert names & declared, f"{module} is imported ({places[0][0]}) but not in [project] dependencies"


def test_console_script_is_installed():
    script = shutil.which("napari-deepseg", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout and "predict" in result.stdout


def test_readme_and_ci_run_the_same_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "```bash\npip install tox && tox\n```" in readme
    assert "\npip install tox && tox\n" in ci
    assert " libxcb-cursor0 " in ci  # Qt >= 6.5's xcb platform plugin does not load without it
    assert 'pip install ".[all]" && napari-deepseg demo --headless' in readme
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", readme):
        assert (ROOT / image).is_file(), image


def test_pre_commit_runs_the_pinned_linters():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    revs = {repo["repo"].rsplit("/", 1)[-1]: repo.get("rev") for repo in config["repos"]}
    hooks = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "mypy", "napari-plugin-checks"} <= hooks
    lint = _pyproject()["project"]["optional-dependencies"]["lint"]
    assert f"ruff=={revs['ruff-pre-commit'].removeprefix('v')}" in lint


@pytest.mark.slow
def test_wheel_contains_the_manifest_sample_data_and_metadata(tmp_path):
    pytest.importorskip("hatchling")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("napari_deepseg-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        manifest = zf.read("napari_deepseg/napari.yaml").decode()
        entry = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        license_file = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert zf.read(license_file) == (ROOT / "LICENSE").read_bytes()
    assert manifest == (ROOT / "napari.yaml").read_text()
    assert "napari_deepseg:napari.yaml" in entry
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "License-File: LICENSE" in metadata
    for key in HUB_URLS:
        assert f"Project-URL: {key}, https://" in metadata
    assert "Requires-Dist: superqt" in metadata
    assert "# napari-deepseg" in metadata  # the README is the long description the hub shows
    for sample in ("fluorescence", "he"):
        for part in ("image", "strokes", "mask"):
            assert f"napari_deepseg/sample_data/{sample}_{part}.png" in names
