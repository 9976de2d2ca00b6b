# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: venv install demo test lint format clean gpu-check

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	# CPU torch unless a torch is already present (e.g. the NGC image or a CUDA venv).
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[test]"
	touch $@

venv install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/megatron-agentic demo $(DEMO_ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q tests $(PYTEST_ARGS)

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
