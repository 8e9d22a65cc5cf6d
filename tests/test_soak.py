"""A shorter soak (benchmarks/soak.py) in a fresh process: memory, descriptors and threads stay flat."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self (Linux)")
def test_300_iterations_and_30_predictions_leak_nothing(tmp_path):
    out = tmp_path / "soak.json"
    command = [sys.executable, str(SCRIPT), "--iterations", "300", "--predictions", "30", "--json", str(out)]
    subprocess.run(command, check=True, timeout=600, capture_output=True)
    result = json.loads(out.read_text())
    warm, end = result["after_warmup"], result["end"]
    assert (result["iterations"], result["predictions"]) == (300, 30)
    assert result["rss_growth_percent"] < 5.0, result
    assert end["open_fds"] <= warm["open_fds"], result
    assert end["os_threads"] <= warm["os_threads"] and end["python_threads"] <= warm["python_threads"], result
    assert result["start"]["python_threads"] == end["python_threads"]  # no Python thread left behind
