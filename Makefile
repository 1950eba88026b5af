# Entry points for people and CI. Everything installs into a cached virtual environment
# (scripts/setup_env.sh says where and how); `make setup` is a fast no-op once done.
SHELL := /bin/bash
CACHE ?= $(or $(SEARCHPRIORS_CACHE),$(HOME)/.cache/comfyui-searchpriors)
VENV ?= $(or $(SEARCHPRIORS_VENV),$(CACHE)/venv)
PYTHON := $(VENV)/bin/python
export SEARCHPRIORS_CACHE := $(CACHE)
export SEARCHPRIORS_VENV := $(VENV)

.PHONY: setup run serve test bench

setup:
	bash scripts/setup_env.sh

run: setup
	$(PYTHON) scripts/run_demo.py

# ComfyUI with the pack on 127.0.0.1 in the foreground (Ctrl-C stops it); PORT=8188 picks the port.
serve: setup
	$(PYTHON) scripts/serve.py $(if $(PORT),--port $(PORT))

test: setup
	$(PYTHON) -m pytest -q tests

# Every benchmarks/*.py except helpers whose name starts with "_".
bench: setup
	@shopt -s nullglob; files=(benchmarks/[!_]*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no benchmarks yet"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(PYTHON) "$$f" || exit $$?; done
