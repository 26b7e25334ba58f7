# medgen — set-up, demo and tests from a fresh clone with only Python present.
PYTHON ?= python3
VENV ?= .venv
# torch first, pinned: an unpinned torch (or a range the local CPU wheel does not satisfy)
# makes pip fetch a multi-GB CUDA build. GPU users: make setup TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.medgen-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q $(TORCH_SPEC)
	$(PIP) install --disable-pip-version-check -q -e ".[dev]"
	# pyradiomics has no wheel for Python 3.11: build it against the installed numpy (DESIGN.md)
	$(PIP) install --disable-pip-version-check -q numpy setuptools wheel
	$(PIP) install --disable-pip-version-check -q --no-build-isolation "pyradiomics==3.0.1"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/medgen demo --out demo-output

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo-output .pytest_cache
