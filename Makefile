# The single entry point. Every target creates the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.percept-installed
export PERCEPT_DATA ?= $(abspath ../shared/data)

.PHONY: help venv demo test test-all lint book notebooks bench clean

help:
	@echo "make demo   - set up and run the demo (a photo at a low rate: plain decode, enhancer, latent fusion; one PNG)"
	@echo "make test   - set up and run the offline test suite"
	@echo "make book   - execute the notebooks with papermill and build the Jupyter Book"
	@echo "make lint   - ruff"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, as an explicitly matching pair (see pyproject.toml)
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# DEMO_ARGS: more options, e.g. the README's picture: DEMO_ARGS="--panel 136 --out docs/demo.png"
demo: $(STAMP)
	mkdir -p out
	$(BIN)/percept demo --out out/demo.png $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q --run-slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

notebooks: $(STAMP)
	$(BIN)/python -m percept.cli.book run --profile $${PROFILE:-full} $(if $(RECOMPUTE),--recompute)

# RECOMPUTE=1: execute every chapter instead of reusing the committed runs in results/<profile>/
book: $(STAMP)
	$(BIN)/python -m percept.cli.book build --profile $${PROFILE:-full} $(if $(RECOMPUTE),--recompute)

clean:
	rm -rf book/_build book/notebooks out
