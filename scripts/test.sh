#!/usr/bin/env bash
# Lint, format check and the whole test suite (run scripts/setup.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
