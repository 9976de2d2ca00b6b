# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# PyPI's Linux x86_64 torch wheel is the CUDA build (several GB; it also runs on CPU). For the CPU-only build on a
# standard machine: make venv TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

.PHONY: venv install lock demo test test-fast lint format clean gpu-check

LOCK := requirements/lock.txt

# make venv installs exactly the locked versions (requirements/lock.txt, `make lock` refreshes it), then the project
# itself without dependencies and without build isolation (the locked setuptools builds it), then checks consistency.
$(VENV)/.installed: setup.py $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $$(grep -E '^(pip|setuptools|wheel)==' $(LOCK))
	# torch only when none is present (the NGC image or a CUDA venv keep theirs); see TORCH_INDEX_URL above.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION) \
		$(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PIP) install -q --no-deps -r $(LOCK)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $@

venv install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/megatron-agentic demo $(DEMO_ARGS)

# pytest-xdist workers; --dist loadfile keeps each test file (and its module fixtures) on one worker, and
# --no-loadscope-reorder hands out the files in collection order (longest first: tests/conftest.py LONG_FIRST).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The whole suite (CI's command), with the 25 slowest tests listed at the end.
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q tests $(XDIST) --durations=25 $(PYTEST_ARGS)

# The in-process tier for the edit loop (no training processes, no subprocess pipelines): a few minutes on 2 cores.
test-fast: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q tests -m "not slow" $(XDIST) --durations=10 $(PYTEST_ARGS)

# Refresh requirements/lock.txt from setup.py's pins and extras (pip's resolver, nothing installed).
lock: $(VENV)/.installed
	$(PY) requirements/lock.py --torch-version $(TORCH_VERSION)

# GPU acceptance run (one node, ~8 min): kernel tests, attention benchmark, a cut Qwen3-30B-A3B trained bf16/FP8;
# writes runs/gpu-check/report.json and throughput.json (for `megatron-agentic plan --throughput`). Exit 2 without a GPU.
gpu-check: $(VENV)/.installed
	$(PY) benchmarks/gpu_acceptance.py --out $${GPU_CHECK_OUT:-runs/gpu-check} $(GPU_CHECK_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info
