#!/usr/bin/env bash
# Lint, format check and the whole test suite (run scripts/setup.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# one pytest worker per core (pytest-xdist); PRIMUS_TEST_WORKERS=0 runs in this process
.venv/bin/python -m pytest -q -n "${PRIMUS_TEST_WORKERS:-auto}" "$@"
