# Every target installs what it needs into .venv first, from this repository's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install lint typecheck test demo bench soak clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $@

lint: install
	$(BIN)/ruff check worker simulator bench tests
	$(BIN)/ruff format --check worker simulator bench tests

typecheck: install
	$(BIN)/mypy

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/streaming-worker demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

bench: install
	$(BIN)/python -m bench --preset standard

# Not in CI: two workers under kill -9, terminated backends and provider faults for 20 minutes
# (`$(BIN)/python -m bench.soak --minutes N` for another length), then every job checked.
soak: install
	$(BIN)/python -m bench.soak
