# Two commands do all set-up on a fresh machine: `make run` (the main job) and `make test`.
# Both create .venv when it is missing and install torch + torchvision as a pair first, so no
# dependency can resolve another (multi-GB) torch build; then the pinned lock; then evfarm itself.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.evfarm-installed
TORCH  := torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := token
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1

.PHONY: install run demo test test-slow bench lint clean-venv

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet $(TORCH) -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# The main job: the CacheQuant grid on the embedded local Ray (the demo sweep: `make demo`).
run: install
	$(PY) sweeps/cachequant_grid.py $(ARGS)

demo: install
	$(PY) sweeps/demo_sweep.py $(ARGS)

test: install
	$(PY) -m pytest $(ARGS)

test-slow: install
	$(PY) -m pytest -m "slow" $(ARGS)

bench: install
	$(PY) sweeps/bench_farm.py

lint: install
	$(PY) -m ruff check cluster actors methods sims sweeps tests

clean-venv:
	rm -rf $(VENV)
