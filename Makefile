# Two entry points work on a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Where a CPU build of torch lies on disk, install it first so the wide `torch>=2.1`
# requirement is satisfied without downloading a multi-GB CUDA build.
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))

.PHONY: demo test lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
ifneq ($(TORCH_WHEEL),)
	$(PIP) install -q "$(TORCH_WHEEL)"
endif
	$(PIP) install -q -e ".[dev,plot]"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/digits_demo.py

# pytest exits 5 when it collects nothing; say so loudly (make then fails with it).
test: $(VENV)/.installed
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.installed
	$(PY) -m mypy

bench: $(VENV)/.installed
	$(PY) benchmarks/counting.py
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
