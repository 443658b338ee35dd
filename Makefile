# deepfeat: two commands on a fresh clone.
#   make demo   -- create .venv, install deepfeat, run the demo experiment on built-in data
#   make test   -- create .venv, install deepfeat with test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
# make test runs the fast suite on TEST_JOBS processes (pytest-xdist; one test file per
# process, so module fixtures are built once); TEST_JOBS=0 runs it in this process.
TEST_JOBS ?= 2
BIN    := $(VENV)/bin
# The machine may carry a local CPU-only torch wheel that pip prefers but that no
# torchvision release matches; the constraint makes pip resolve a matching pair from PyPI.
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check -c .ci/constraints.txt

.PHONY: demo test test-all bench lint clean-venv

$(BIN)/.installed: pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/deepfeat demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

test-all: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/deepfeat bench

lint: $(BIN)/.installed
	$(BIN)/ruff check deepfeat tests benchmarks

clean-venv:
	rm -rf $(VENV)
