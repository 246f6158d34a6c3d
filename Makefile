# configurable-agents: install, lint, test, run the example, benchmark.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
# llama-cpp-python compiles on first install; skipping LLaVA roughly halves the build. A
# -march=native build of llama.cpp 0.3.36 crashes (SIGSEGV in llama_decode) on CPUs with AMX
# and AVX-512 (seen on the 2-core Xeon dev machines): build for AVX2 instead, which runs on any
# x86-64 of the last ten years (the GGML_AVX* switches are ignored on other architectures).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
	-DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
export MLFLOW_DISABLE_TELEMETRY = true

.PHONY: install example test nightly lint format bench taskset clean

# pip keys its cache of built wheels by version only, so a machine whose cache holds a
# -march=native build would keep installing it whatever CMAKE_ARGS say. Build llama-cpp-python
# once per CMAKE_ARGS into a wheelhouse named by their hash and install from there.
LLAMA_CPP_VERSION ?= 0.3.36
WHEELHOUSE ?= $(HOME)/.cache/configurable-agents/wheels/$(shell printf '%s' "$(CMAKE_ARGS)" | sha1sum | cut -c1-12)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		$(PY) -m pip wheel --quiet --no-cache-dir --no-deps -w $(WHEELHOUSE) \
			llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(PY) -m pip install --quiet $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PY) -m pip install --quiet -e ".[local,mlflow,server,pii,batch,ray,dev]"
	touch $@

install: $(VENV)/.installed

example: install  ## run the example workflow on the local SmolLM2 model
	$(VENV)/bin/configurable-agents run examples/article_writer.yaml --input topic="tide pools"

lint: install  ## ruff, mypy, and the import layers (lint-imports, contracts in pyproject.toml)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint  ## lint, type-check and run every test (the local-model tests included)
	$(PY) -m pytest

# The long runs of the two randomized tests (CI runs a slice of each in `make test`): 20,000
# mutated workflow files and Schemathesis with 1000 cases per operation, a new seed each time.
nightly: install  ## about 30-60 minutes on 2 cores
	CA_FUZZ_CASES=20000 CA_SCHEMATHESIS_MAX_EXAMPLES=1000 CA_SCHEMATHESIS_SEED=random \
		$(PY) -m pytest -s -o timeout=7200 tests/test_fuzz_workflows.py tests/serve/test_schemathesis.py

format: install
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

bench: install
	$(PY) bench/overhead.py
	$(PY) bench/local_tokens.py
	$(PY) bench/tracing_pipeline.py
	$(PY) bench/server_tracing.py

taskset: install  ## which local model writes best: the task-set table, then the example's targets
	$(PY) bench/local_taskset.py
	$(PY) bench/article_writer.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
