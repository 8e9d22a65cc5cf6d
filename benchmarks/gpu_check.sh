#!/usr/bin/env bash
# The GPU check, for the day a CUDA machine is lent (under 5 minutes, each step with its own limit):
# the GPU tests, then the figures of benchmarks/gpu_check.py. Installs nothing heavy: it expects the
# environment of `pip install -e ".[testing]"` (torch's default wheels carry CUDA). Results go to
# ${OUT:-.}/gpu_check.json and the log to stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
py="${PYTHON:-python}"  # the environment napari-deepseg is installed in
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: no torch with a CUDA device in $py"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 150 "$py" -m pytest -q -p no:xvfb -p no:cacheprovider -m gpu tests/test_gpu.py
tests=$?
timeout 150 "$py" -u benchmarks/gpu_check.py --json "$out/gpu_check.json"
figures=$?
echo "gpu_check: tests exit $tests, figures exit $figures"
exit $(( tests != 0 || figures != 0 ))
