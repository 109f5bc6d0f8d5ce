#!/usr/bin/env bash
# Every detector x embedder combination side by side (not part of the test run; the full run
# describes all of LFW once per combination: hours on 2 cores).
# Usage: bash bench/models.sh [--limit N] [--ingest-images 200] [--detectors hog,yunet]
#        [--embedders dlib-resnet,sface,fused]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python bench/models.py "$@"
