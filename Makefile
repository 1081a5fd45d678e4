# Builds one virtual environment per TensorFlow line and runs the project in it.
# The default line is the newest: TF 2.21 on Python 3.12, no tensorflow-estimator.
#   make train      set up the default line and train the default experiment
#   make test       set up the default line and run the tests
#   make test-tf215 the same tests on TF 2.15 + tensorflow-estimator (Python 3.11)
#   make test-tf1   the same tests on TF 1.15 (Python 3.7)
#   make test-py313 the default line's tests on Python 3.13
#   make test-wheel build the wheel, install it into a clean venv with no
#                   checkout on the path, and train a short digits run from it
#   make bench      the benchmark against the peers on the default line
#   make bench-tf215, make bench-tf1   the same on the other lines

PYTHON312 ?= $(shell PYENV_VERSION=3.12.1 pyenv which python3 2>/dev/null || command -v python3.12)
PYTHON311 ?= $(shell PYENV_VERSION=3.11.7 pyenv which python3 2>/dev/null || command -v python3.11)
PYTHON37 ?= $(shell PYENV_VERSION=3.7.16 pyenv which python3 2>/dev/null || command -v python3.7)
PYTHON313 ?= $(shell PYENV_VERSION=3.13.0 pyenv which python3 2>/dev/null || command -v python3.13)
MODEL_DIR ?= runs/gpt2_tiny
GIN_FILE ?= runs/gpt2_tiny.gin
PYTEST_ARGS ?=

.PHONY: train test test-tf215 test-tf1 test-py313 test-wheel venv venv-tf215 \
	venv-tf1 venv-py313 \
	bench bench-tf215 bench-tf1 clean

venv: .venv/.installed
venv-tf215: .venv215/.installed
venv-tf1: .venv37/.installed
venv-py313: .venv313/.installed

.venv/.installed: requirements-tf221.txt setup.py
	@test -n "$(PYTHON312)" || { echo "No Python 3.12 found (pyenv 3.12.1 or python3.12)"; exit 1; }
	$(PYTHON312) -m venv .venv
	.venv/bin/python -m pip install -q --upgrade pip
	.venv/bin/python -m pip install -q -r requirements-tf221.txt
	.venv/bin/python -m pip install -q --no-deps -e .
	touch $@

.venv215/.installed: requirements-tf215.txt setup.py
	@test -n "$(PYTHON311)" || { echo "No Python 3.11 found (pyenv 3.11.7 or python3.11)"; exit 1; }
	$(PYTHON311) -m venv .venv215
	.venv215/bin/python -m pip install -q --upgrade pip
	.venv215/bin/python -m pip install -q -r requirements-tf215.txt
	.venv215/bin/python -m pip install -q --no-deps -e .
	touch $@

.venv37/.installed: requirements-tf1.txt setup.py
	@test -n "$(PYTHON37)" || { echo "No Python 3.7 found (pyenv 3.7.16 or python3.7)"; exit 1; }
	$(PYTHON37) -m venv .venv37
	.venv37/bin/python -m pip install -q --upgrade 'pip<24.1'
	.venv37/bin/python -m pip install -q -r requirements-tf1.txt
	.venv37/bin/python -m pip install -q --no-deps -e .
	touch $@

.venv313/.installed: requirements-tf221.txt setup.py
	@test -n "$(PYTHON313)" || { echo "No Python 3.13 found (pyenv 3.13.0 or python3.13)"; exit 1; }
	$(PYTHON313) -m venv .venv313
	.venv313/bin/python -m pip install -q --upgrade pip
	.venv313/bin/python -m pip install -q -r requirements-tf221.txt
	.venv313/bin/python -m pip install -q --no-deps -e .
	touch $@

train: venv
	.venv/bin/hookestimator train --gin_file=$(GIN_FILE) --model_dir=$(MODEL_DIR)

test: venv
	.venv/bin/python -m pytest -q $(PYTEST_ARGS) tests

test-tf215: venv-tf215
	.venv215/bin/python -m pytest -q $(PYTEST_ARGS) tests

test-tf1: venv-tf1
	.venv37/bin/python -m pytest -q $(PYTEST_ARGS) tests

test-py313: venv-py313
	.venv313/bin/python -m pytest -q $(PYTEST_ARGS) tests

test-wheel: venv
	.ci/wheel_run .venv/bin/python

bench: venv
	.venv/bin/python -m bench.peers

bench-tf215: venv-tf215
	.venv215/bin/python -m bench.peers

bench-tf1: venv-tf1
	.venv37/bin/python -m bench.peers

clean:
	rm -rf .venv .venv215 .venv37 .venv313 runs
