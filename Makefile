# medgen — set-up, demo and tests from a fresh clone with only Python present.
PYTHON ?= python3
VENV ?= .venv
# torch first, pinned: an unpinned torch (or a range the local CPU wheel does not satisfy)
# makes pip fetch a multi-GB CUDA build. GPU users: make setup TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
# torchvision's model definitions (VGG16, ResNet-50, Inception) for local pretrained weights; its
# C ops may not load on CPU torch (medgen.compat handles that). --no-deps: never pull another torch.
TORCHVISION_SPEC ?= torchvision==0.28.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.medgen-installed

.PHONY: setup demo test docs bench experiments clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q $(TORCH_SPEC)
	$(PIP) install --disable-pip-version-check -q -e ".[dev]"
	$(PIP) install --disable-pip-version-check -q --no-deps $(TORCHVISION_SPEC) || echo "note: torchvision not installed; features that need local ImageNet weights will say so"
	# pyradiomics has no wheel for Python 3.11: build it against the installed numpy (DESIGN.md)
	$(PIP) install --disable-pip-version-check -q numpy setuptools wheel
	$(PIP) install --disable-pip-version-check -q --no-build-isolation "pyradiomics==3.0.1"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/medgen demo --out demo-output

test: setup
	$(PY) -m pytest -q

# the CLI reference and the preset pages are generated from the code (tests check they are current)
docs: setup
	$(PY) -m typer medgen.cli utils docs --name medgen --output docs/cli.md
	$(PY) -m medgen.preset_docs docs/presets

bench: setup
	PY=$(abspath $(PY)) bench/run_all.sh

# reruns each study's protocol on the built-in data (small profiles; several hours on 2 cores;
# resumable) and regenerates docs/results.md from the outputs. JOBS=N runs N independent steps at
# once (each command gets cores / N threads): worth it with cores to spare
JOBS ?= 1
experiments: setup
	-$(PY) experiments/run.py --out experiments-output --jobs $(JOBS)   # a failed step is reported on the page, not hidden
	$(PY) experiments/results_page.py --out experiments-output --page docs/results.md

clean:
	rm -rf $(VENV) demo-output experiments-output .pytest_cache
