# Two commands on a fresh machine: `make demo` and `make test`. Both create the
# virtual environment and install the project (with the embedded broker) first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: demo test lint install

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# Compile the numba kernels once now (cached on disk), not in a worker's first batch.
	$(PY) -c "from stream.model import kernel; from stream.events import batch; kernel.warm_up(); batch.warm_up()"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/learnstream demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest
