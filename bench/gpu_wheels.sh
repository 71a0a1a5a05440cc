#!/usr/bin/env bash
# Here, where the package registry answers: put the wheels that a GPU machine's Python lacks
# (zennit, the oracle of bench_gpu.py and of some cuda tests) into .gpu-wheels/, which git
# ignores. Carry that folder with the tree to the GPU machine; bench/gpu.sh installs it there.
# The GPU machine has no network, and its other packages (torch, torchvision, numpy, pillow,
# scipy, click, safetensors, pytest, hypothesis) come with its Python.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu-wheels zennit==0.5.1
ls .gpu-wheels
