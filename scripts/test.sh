#!/usr/bin/env bash
# Lint, format check and the whole test suite (run scripts/setup.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# one pytest worker per core (pytest-xdist); PRIMUS_TEST_WORKERS=0 runs in this process.
# Each worker (and the processes its tests start) uses one torch thread: two workers of two
# threads each on two cores spin against each other and run the training tests ~10x slower.
if [ "${PRIMUS_TEST_WORKERS:-auto}" != 0 ]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi
.venv/bin/python -m pytest -q -n "${PRIMUS_TEST_WORKERS:-auto}" "$@"
