#!/usr/bin/env bash
# Set up (idempotent), start PostgreSQL on loopback for the store tests, and run the default
# test suite; long benchmarks live in bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
postgres_url="$(bash scripts/postgres.sh)"
export FACESEARCH_TEST_POSTGRES_URL="$postgres_url"
exec .venv/bin/python -m pytest -q "$@"
