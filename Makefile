# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv with a Python >= 3.12 found on this machine, install the package with its
# test extras (only when pyproject.toml changed), and run.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# litellm fetches a price map from the network at import time unless told not to.
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PYTEST_ARGS ?=

# First interpreter that really runs and is >= 3.12 (pyenv shims exist even when they cannot run).
PYENV_ROOT_DIR := $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
CANDIDATES := $(PYTHON) python3.13 python3.12 python3 \
	$(shell ls -d $(PYENV_ROOT_DIR)/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV) \
	$(wildcard /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9])
FIND_PYTHON = for c in $(CANDIDATES); do \
	  if "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then echo "$$c"; break; fi; \
	done

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  BASE=$$($(FIND_PYTHON)); \
	  if [ -z "$$BASE" ]; then \
	    echo "error: detailed-balance needs Python >= 3.12 (PyMC 6), and none was found." >&2; \
	    echo "Install one, e.g. 'pyenv install 3.13' or 'apt-get install python3.13 python3.13-venv'," >&2; \
	    echo "or point to it: make PYTHON=/path/to/python3.13 test" >&2; exit 1; \
	  fi; \
	  echo "Creating $(VENV) with $$BASE ($$($$BASE --version))"; \
	  "$$BASE" -m venv $(VENV); \
	fi; \
	echo "Installing detailed-balance[test] into $(VENV) ..."; \
	$(PY) -m pip install -q -e '.[test]' 2> >(grep -v "^WARNING: Location" >&2); \
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/detailed-balance demo --out demo-output

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check detailed_balance tests benchmarks examples
	$(VENV)/bin/ruff format --check detailed_balance tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/least_action.py
	$(PY) benchmarks/simulation.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
