# The two commands: `make run` (a demo box on :8080, data in ./var) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
DATA   ?= ./var
HOST   ?= 0.0.0.0
PORT   ?= 8080

.PHONY: run test lint bench clean venv image rootfs

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian install it with 'apt-get install python3-venv'"; exit 1; }
	@$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/vrlms-edge --data-dir $(DATA) demo --if-empty
	$(BIN)/vrlms-edge --data-dir $(DATA) serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check vrlms_edge tests $(wildcard bench)
	$(BIN)/ruff format --check vrlms_edge tests $(wildcard bench)
	$(BIN)/mypy vrlms_edge

test: lint
	$(BIN)/pytest -q -rs $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	@echo "no benchmarks yet"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
