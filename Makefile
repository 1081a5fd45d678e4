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

# $(call make-venv,PYTHON,VENV,REQUIREMENTS,PIP,WHAT): a venv of the line.
define make-venv
	@test -n "$(1)" || { echo "No $(5) found"; exit 1; }
	$(1) -m venv $(2)
	$(2)/bin/python -m pip install -q --upgrade '$(4)'
	$(2)/bin/python -m pip install -q -r $(3)
	$(2)/bin/python -m pip install -q --no-deps -e .
	touch $(2)/.installed
endef

.venv/.installed: requirements-tf221.txt setup.py
	$(call make-venv,$(PYTHON312),.venv,requirements-tf221.txt,pip,Python 3.12 (pyenv 3.12.1 or python3.12))

.venv215/.installed: requirements-tf215.txt setup.py
	$(call make-venv,$(PYTHON311),.venv215,requirements-tf215.txt,pip,Python 3.11 (pyenv 3.11.7 or python3.11))

.venv37/.installed: requirements-tf1.txt setup.py
	$(call make-venv,$(PYTHON37),.venv37,requirements-tf1.txt,pip<24.1,Python 3.7 (pyenv 3.7.16 or python3.7))

.venv313/.installed: requirements-tf221.txt setup.py
	$(call make-venv,$(PYTHON313),.venv313,requirements-tf221.txt,pip,Python 3.13 (pyenv 3.13.0 or python3.13))

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
