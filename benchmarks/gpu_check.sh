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
# With more than one GPU: the same training on 1 and on all GPUs through torchrun (DDP, NCCL).
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
ddp=0
if [ "$gpus" -gt 1 ]; then
    data=$(mktemp -d)
    "$py" - "$data" <<'PY'
import sys, tifffile
from napari_deepseg import sample_data
image, strokes = sample_data.load_fluorescence_sample()
tifffile.imwrite(f"{sys.argv[1]}/image.tif", image)
tifffile.imwrite(f"{sys.argv[1]}/labels.tif", strokes)
PY
    for n in 1 "$gpus"; do
        start=$(date +%s.%N)
        timeout 120 "$py" -m torch.distributed.run --standalone --nproc-per-node="$n" -m napari_deepseg.cli \
            train --image "$data/image.tif" --labels "$data/labels.tif" --output "$data/model$n.safetensors" \
            --iterations 100 --device cuda >"$data/log$n.txt" 2>&1 || ddp=1
        end=$(date +%s.%N)
        echo "gpu_check: DDP $n GPU(s), 100 iterations (batch per GPU as default): $(awk "BEGIN { printf \"%.1f\", $end - $start }") s"
    done
fi
echo "gpu_check: tests exit $tests, figures exit $figures, DDP exit $ddp"
exit $(( tests != 0 || figures != 0 || ddp != 0 ))
