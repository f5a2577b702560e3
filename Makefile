# Two set-up commands: `make serve` runs the service on its embedded defaults,
# `make test` installs what the tests need and runs them (lint and types included).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-test serve test lint bench openapi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

serve: install
	$(BIN)/quantserve serve

lint: install-test
	$(BIN)/ruff check quantcore service workers tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench

openapi: install
	$(BIN)/python -m service.api.openapi_export openapi/openapi.json
