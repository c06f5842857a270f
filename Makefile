.PHONY: setup demo test lint format bench mutation
setup:
	bash scripts/setup.sh
demo: setup
	.venv/bin/primus demo
test: setup
	bash scripts/test.sh
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .
bench:
	.venv/bin/primus bench
mutation:
	bash scripts/mutation.sh
