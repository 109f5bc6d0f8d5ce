#!/usr/bin/env bash
# Crawler throughput against a local website (pages/s, images/s, faces/s).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/crawl.py "$@"
