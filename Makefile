# Builds one virtual environment per TensorFlow line and runs the project in it.
#   make train    set up the TF 2.15 line and train the default experiment
#   make test     set up the TF 2.15 line and run the tests
#   make test-tf1 the same tests on the TF 1.15 line (needs a Python 3.7)
#   make bench    the benchmark against the peers on the TF 2.15 line
#   make bench-tf1 the same on the TF 1.15 line (no Keras rows there)

PYTHON311 ?= python3
PYTHON37 ?= $(shell PYENV_VERSION=3.7.16 pyenv which python3 2>/dev/null || command -v python3.7)
MODEL_DIR ?= runs/gpt2_tiny
GIN_FILE ?= runs/gpt2_tiny.gin
PYTEST_ARGS ?=

.PHONY: train test test-tf1 venv venv-tf1 bench bench-tf1 clean

venv: .venv/.installed
venv-tf1: .venv37/.installed

.venv/.installed: requirements-tf2.txt setup.py
	$(PYTHON311) -m venv .venv
	.venv/bin/python -m pip install -q --upgrade pip
	.venv/bin/python -m pip install -q -r requirements-tf2.txt
	.venv/bin/python -m pip install -q --no-deps -e .
	touch $@

.venv37/.installed: requirements-tf1.txt setup.py
	@test -n "$(PYTHON37)" || { echo "No Python 3.7 found (pyenv 3.7.16 or python3.7)"; exit 1; }
	$(PYTHON37) -m venv .venv37
	.venv37/bin/python -m pip install -q --upgrade 'pip<24.1'
	.venv37/bin/python -m pip install -q -r requirements-tf1.txt
	.venv37/bin/python -m pip install -q --no-deps -e .
	touch $@

train: venv
	.venv/bin/hookestimator train --gin_file=$(GIN_FILE) --model_dir=$(MODEL_DIR)

test: venv
	.venv/bin/python -m pytest -q $(PYTEST_ARGS) tests

test-tf1: venv-tf1
	.venv37/bin/python -m pytest -q $(PYTEST_ARGS) tests

bench: venv
	.venv/bin/python -m bench.peers

bench-tf1: venv-tf1
	.venv37/bin/python -m bench.peers

clean:
	rm -rf .venv .venv37 runs
