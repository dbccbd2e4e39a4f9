# Two entry points (README): `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DATA ?= data
PROFILE ?= cpu
# the compiled scoring kernel (relief_nb/native.py) is built inside the environment, not in $HOME
export RELIEF_NB_CACHE ?= $(abspath $(VENV))/relief_nb-cache

.PHONY: setup run test test-unit test-long test-notebooks lint bench fetch-mnist notebooks clean

setup: $(VENV)/.installed

# torch is pinned through constraints.txt to the CPU wheel (README, "Two commands": why)
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev,notebooks]" -c constraints.txt
	touch $@

fetch-mnist: setup
	$(BIN)/relief-nb fetch mnist --data-dir $(DATA)

# The main job: the LeNet / MNIST table on real MNIST, on this CPU (results/lenet-mnist/).
run: fetch-mnist
	$(BIN)/relief-nb reproduce lenet-mnist --profile $(PROFILE) --data-dir $(DATA)

test: fetch-mnist lint test-unit test-notebooks

# ruff, then the layers contract in pyproject.toml (import-linter: imports only downward, docs/architecture.md)
lint: setup
	$(BIN)/ruff check relief_nb tests benchmarks
	$(BIN)/lint-imports --no-cache

test-unit: setup
	$(BIN)/pytest -n 2 -q -m "not long" tests

# real-data training checks of the dependency graph (ResNet-18/50, MobileNetV2, ViT, GELU MLP on MNIST): ~10 min
test-long: fetch-mnist
	$(BIN)/pytest -n 2 -q -m long tests

# nbval re-executes the committed notebooks on the fast path (RELIEF_NB_FAST: smoke profile) and compares the
# checked cells, the CPU-independent method fingerprints (relief_nb/fingerprint.py)
test-notebooks: setup
	RELIEF_NB_FAST=1 $(BIN)/pytest -n 2 --dist loadfile -q --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks

# rebuild the gallery notebooks/ from the templates in relief_nb/templates: real MNIST results (cpu profile) for
# the tour, the LeNet table and the summary; smoke outputs on stand-in data where no real data exists (~45 min)
notebooks: fetch-mnist
	$(BIN)/relief-nb notebook --all --gallery notebooks $(if $(filter-out data,$(DATA)),--data-dir $(DATA))

bench: fetch-mnist
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) results .pytest_cache
