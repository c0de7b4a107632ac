# Two entry points work on a fresh machine with Python 3.10+ and make: `make demo` and
# `make test`. `make demo` installs the package with its runtime and plot extras only;
# `make test` (and lint, typecheck, bench) adds the dev extra. Each install has its own stamp,
# so a `make test` after a `make demo` still installs the dev tools, and neither repeats
# when pyproject.toml has not changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Where a CPU build of torch lies on disk, install it first so the wide `torch>=2.1`
# requirement is satisfied without downloading a multi-GB CUDA build.
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))
# The stamps: the venv with torch, then one per set of extras installed into it.
BASE := $(VENV)/.base
RUNTIME := $(VENV)/.installed-plot
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck bench builtin-calibrations clean

$(BASE):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
ifneq ($(TORCH_WHEEL),)
	$(PIP) install -q "$(TORCH_WHEEL)"
endif
	touch $@

$(RUNTIME): pyproject.toml $(BASE)
	$(PIP) install -q -e ".[plot]"
	touch $@

$(DEV): pyproject.toml $(BASE)
	$(PIP) install -q -e ".[dev,plot]"
	touch $@

demo: $(RUNTIME)
	$(PY) examples/digits_demo.py

# pytest exits 5 when it collects nothing; say so loudly (make then fails with it).
test: $(DEV)
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

lint: $(DEV)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples

typecheck: $(DEV)
	$(PY) -m mypy

bench: $(DEV)
	$(PY) benchmarks/counting.py
	$(PY) benchmarks/overhead.py

# The calibrations shipped in src/lightning_to_energy/calibration/builtin/, refitted from the
# published measurements they rest on (a test checks the shipped file matches the data's hash).
SHARED_STEPS ?= ../shared/data/h100-training-steps.json
builtin-calibrations: $(DEV)
	rm -f src/lightning_to_energy/calibration/builtin/h100-sxm.json.new
	$(PY) -m lightning_to_energy fit $(SHARED_STEPS) \
		--out src/lightning_to_energy/calibration/builtin/h100-sxm.json.new
	mv src/lightning_to_energy/calibration/builtin/h100-sxm.json.new \
		src/lightning_to_energy/calibration/builtin/h100-sxm.json

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
