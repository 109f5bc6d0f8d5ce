#!/usr/bin/env bash
# Scale benchmark (not part of the test run): streams galleries of 1M, 10M and 100M faces into
# the index the service would choose and prints build time, bytes per face, memory, latency
# and mate recall. 100M takes hours on 2 cores and 52 GB of disk (--work-dir) for descriptors.
# Usage: bash bench/scale.sh [--sizes 1000000,10000000,100000000] [--index auto|hnsw|ivfpq]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python bench/scale.py "$@"
