# Targets use the project's virtual environment; `make setup` (or scripts/setup.sh) creates it.
PY ?= .venv/bin/python
CHECK_DIRS := harivo tests benchmarks scripts

.PHONY: setup style quality test

setup:
	bash scripts/setup.sh

style:
	$(PY) -m ruff format $(CHECK_DIRS)
	$(PY) -m ruff check --fix $(CHECK_DIRS)

quality:
	$(PY) -m ruff format --check $(CHECK_DIRS)
	$(PY) -m ruff check $(CHECK_DIRS)

test:
	$(PY) -m pytest -q -n auto
