# Thin targets over the tools; see README.md. Everything runs inside .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYDIRS := $(wildcard servicekit services agent cli tests bench)

.PHONY: setup protos fmt lint test check bench demo clean native native-clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	@touch $@

protos: setup
	PATH=$(BIN):$$PATH $(PY) -m grpc_tools.protoc -I protos --python_out=protos --grpc_python_out=protos \
	  --mypy_out=protos --mypy_grpc_out=protos $$(find protos -name '*.proto')

fmt: setup
	$(BIN)/ruff format $(PYDIRS)
	$(BIN)/ruff check --fix $(PYDIRS)
	cd protos && ../$(BIN)/buf format -w

lint: setup
	$(BIN)/ruff check $(PYDIRS)
	$(BIN)/ruff format --check $(PYDIRS)
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd protos && ../$(BIN)/buf lint && ../$(BIN)/buf format --diff --exit-code

# The runtime's hot modules compiled with mypyc (scripts/native.py); rebuilt when a source changes.
NATIVE_SOURCES := $(wildcard services/runtime/*.py services/runtime/rules/*.py)
native: $(VENV)/.native

$(VENV)/.native: $(VENV)/.installed scripts/native.py $(NATIVE_SOURCES)
	$(PY) scripts/native.py
	@touch $@

native-clean:
	$(PY) scripts/native.py --clean
	@rm -f $(VENV)/.native

test: lint native
	$(PY) -m pytest

check: test

bench: setup
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

demo: setup
	$(BIN)/parallax demo

clean:
	rm -rf $(VENV) data
