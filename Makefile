# kindsync: `make run` and `make test` set everything up themselves.
SHELL := /bin/bash
UV := $(shell if command -v uv >/dev/null 2>&1; then echo uv; else echo "python3 -m uv"; fi)
VENV := .venv
BIN := $(VENV)/bin
# CPython 3.11, an optimised build (PGO and LTO) where the machine has one, as the production
# image's is (python:3.11-slim): Debian's and Ubuntu's /usr/bin/python3.11 are such builds, pyenv's
# are not by default, and on one of those the API spent 7-8% more CPU per mutation (make bench,
# alternated runs). Elsewhere uv takes the first 3.11 it finds; `make PYTHON=...` picks another.
PYTHON := $(or $(wildcard /usr/bin/python3.11),3.11)

.PHONY: run test lint format setup bench

setup: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock Makefile
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

run: setup  ## migrate, then the API on $$PORT and one worker, in the foreground
	$(BIN)/kindsync dev

test: setup  ## the whole suite against local Postgres and Redis, in a database of its own
	$(BIN)/pytest

lint: setup  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup  ## benchmarks against a raw-asyncpg baseline taken in the same run (not part of make test)
	$(BIN)/python -m bench.sync
	$(BIN)/python -m bench.insights
	$(BIN)/python -m bench.push
