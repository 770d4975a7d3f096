# zsmask: the two quick-start commands and the install step they share.
#   make quickstart   set up .venv and run the main job (toy world: prepare, train, evaluate GZS3, draw)
#   make test         set up .venv and run the test suite, one pytest-xdist worker per core
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install quickstart test
install:
	bash scripts/install.sh

quickstart: install
	$(PY) tools/quickstart.py

test: install
	$(PY) -m pytest -q -n auto --dist worksteal
