# mmgem: the two commands of the README, plus helpers.
#   make demo   - install what is missing, then run the main job
#   make test   - install what is missing, then run the test suite
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: install demo test lint

install:
	PYTHON=$(PYTHON) bash tools/install.sh

demo: install
	PYTHON=$(PYTHON) bash tools/demo.sh

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint:
	ruff check mmgem tools tests configs
