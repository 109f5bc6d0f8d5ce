#!/usr/bin/env bash
# Benchmarks (not part of the test run): ingest against face_recognition, search at 10k-1M.
# Usage: bash bench/run.sh [--sizes 10000,100000,1000000] [--ingest-images 300]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# ageitgey's face_recognition over the same dlib build, for a like-for-like comparison.
.venv/bin/pip install -q --disable-pip-version-check --no-deps face_recognition==1.3.0
exec .venv/bin/python bench/bench.py "$@"
