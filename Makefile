# configurable-agents: install, lint, test, run the example, benchmark.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
# llama-cpp-python compiles on first install; skipping LLaVA roughly halves the build.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export MLFLOW_DISABLE_TELEMETRY = true

.PHONY: install example test lint format bench taskset clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[local,mlflow,server,dev]"
	touch $@

install: $(VENV)/.installed

example: install  ## run the example workflow on the local SmolLM2 model
	$(VENV)/bin/configurable-agents run examples/article_writer.yaml --input topic="tide pools"

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test: lint  ## lint, type-check and run every test (the local-model tests included)
	$(PY) -m pytest

format: install
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

bench: install
	$(PY) bench/overhead.py
	$(PY) bench/local_tokens.py

taskset: install  ## which local model writes best: the task-set table, then the example's targets
	$(PY) bench/local_taskset.py
	$(PY) bench/article_writer.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
