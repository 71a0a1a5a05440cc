#!/usr/bin/env bash
# On a machine with a CUDA device: run the tests marked `cuda`, then print LRP latency against
# the gradient and zennit on the device (bench_gpu.py). Under 5 minutes on one GPU.
# Usage (from the repository root, with the project's virtual environment):
#   bench/gpu.sh [PYTHON]
set -euo pipefail
python="${1:-.venv/bin/python}"
cd "$(dirname "$0")/.."
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here')"
timeout 150 "$python" -m pytest -q -m cuda tests/
timeout 150 "$python" bench/bench_gpu.py --repeats 3
