#!/usr/bin/env bash
# Load benchmark (not part of the test run): concurrent search clients against `facesearch
# serve` over a 100k-face gallery, with one client as the baseline.
# Usage: bash bench/load.sh [--clients 4] [--requests 200] [--faces 100000] [--server-workers 1]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/load.py "$@"
