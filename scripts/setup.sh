#!/usr/bin/env bash
# Create .venv and install primus with everything the demo and the tests need.
# Works offline against the package registries only; torch and torchvision are resolved together.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q -e '.[dev]'
# aeon ships BasicMotions and Daphnet as .ts files; its own dependency pins (pandas<3.1, numba)
# would fight the rest of the environment, and primus only reads its data files, so install it
# without dependencies (primus never imports aeon).
.venv/bin/python -m pip install -q --no-deps aeon==1.6.0
echo "primus installed in .venv" >&2
