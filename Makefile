# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates its own virtual environment (.venv) and installs tomopick into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/.tomopick-installed: setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip check
	touch $@

install: $(BIN)/.tomopick-installed

demo: install
	$(BIN)/tomopick demo

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q tomopick/tests tomopick/core

clean:
	rm -rf $(VENV) build *.egg-info
