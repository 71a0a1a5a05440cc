#!/usr/bin/env bash
# On a machine with a CUDA device: run the tests marked `cuda`, then print LRP latency against
# the gradient and zennit on the device (bench_gpu.py). Under 5 minutes on one GPU.
# Usage, from the repository root: bench/gpu.sh [PYTHON]  (the project's .venv by default).
# A Python without this project installed works too (the tree goes on PYTHONPATH); the wheels
# that bench/gpu_wheels.sh put in .gpu-wheels/ (zennit) are installed beside it first, and the
# viewer's cuda tests are left out where its packages are missing (bench_gpu.py --cuda-tests).
set -euo pipefail
python="${1:-.venv/bin/python}"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here')"
if compgen -G ".gpu-wheels/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-site .gpu-wheels/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/gpu-site"
fi
listed=$("$python" bench/bench_gpu.py --cuda-tests)
mapfile -t tests <<<"$listed"
timeout 150 "$python" -m pytest -q -p no:cacheprovider -m cuda "${tests[@]}"
timeout 150 "$python" bench/bench_gpu.py --repeats 3
