#!/usr/bin/env bash
# Stress run (not part of the test run): mixed load against `facesearch serve --workers 2`,
# then `facesearch verify`. Usage: bash bench/stress.sh [--minutes 10] [--people 40]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/stress.py "$@"
