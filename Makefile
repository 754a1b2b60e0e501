# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use and install the pinned set in requirements-dev.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out
# 1: `make test` builds (once per machine, cached outside the checkout) and installs
# MinkowskiEngine so its backend is tested; 0: skip it (its tests then skip, naming the fix).
MINKOWSKI ?= 1

.PHONY: demo test lint format bench venv clean minkowski

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint $(if $(filter 1,$(MINKOWSKI)),minkowski)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m tttkd.cli.demo --out $(DEMO_OUT)

bench: $(STAMP)
	$(PY) -m benchmarks

minkowski: $(STAMP)
	scripts/build_minkowski.sh $(VENV)

clean:
	rm -rf $(VENV) build *.egg-info $(DEMO_OUT)
