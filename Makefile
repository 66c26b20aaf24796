# mmgem: the two commands of the README, plus helpers.
#   make demo   - install what is missing, then run the main job
#   make test   - install what is missing (openmim included), then run the test suite
#   make mim    - install openmim (without opendatalab/openxlab, which downgrade setuptools)
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: install mim demo test lint

install:
	PYTHON=$(PYTHON) bash tools/install.sh

mim:
	PYTHON=$(PYTHON) bash tools/install.sh --with-mim

demo: install
	PYTHON=$(PYTHON) bash tools/demo.sh

# the mim tests run `mim` for real, so the test install path provides it
test: mim
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint:
	ruff check mmgem tools tests configs
