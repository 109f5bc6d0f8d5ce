#!/usr/bin/env bash
# Face analysis images/s on the CPU (one thread) and on a CUDA GPU side by side (not part of
# the test run). On a GPU machine, first: .venv/bin/pip uninstall -y onnxruntime &&
# .venv/bin/pip install 'onnxruntime-gpu[cuda,cudnn]' (see README, "GPU").
# Usage: bash bench/gpu.sh [--images 500] [--batch 32]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/gpu.py "$@"
