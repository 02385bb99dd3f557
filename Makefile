# kexue: every target sets itself up. Set-up reruns only when its inputs change.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Stamps: the venv is (re)installed when pyproject.toml or constraints.txt change,
# node_modules when package.json or package-lock.json change.
DOCS_STAMP := $(VENV)/.kexue-docs
TEST_STAMP := $(VENV)/.kexue-test
NODE_STAMP := node_modules/.kexue-npm
ADDR ?= 127.0.0.1:8000

export NO_MKDOCS_2_WARNING := 1
export MPLBACKEND := Agg
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Bytecode goes to one cache outside the source tree, written on first import, and pip installs
# with --no-compile: compiling every installed module up front (torch has thousands) made the
# install take 2 min 5 s instead of 47 s; on import only what runs is compiled (about 34 MB, 3.5 s
# once). PYTHONDONTWRITEBYTECODE, if the caller's environment sets it, would make every process
# compile from source again (4.7 s instead of 2.0 s to import torch and matplotlib), so it is unset.
export PYTHONPYCACHEPREFIX := $(CURDIR)/.cache/pycache
unexport PYTHONDONTWRITEBYTECODE
# OMP_WAIT_POLICY is left at libgomp's default (spin briefly, then sleep). PASSIVE made the pages
# 1.2-1.8x slower on an idle 2-core machine (capsule 24.7 s -> 30.4 s, DGCNN 17.3 s -> 29.4 s);
# it only helped when several builds shared the cores. Export it yourself in that situation.

.PHONY: help serve test site site-offline bench clean lock browser-deps

help:
	@echo "make serve   set up, then serve the site at http://$(ADDR) with live reload"
	@echo "make test    set up (with test extra), then unit tests, executed docs, strict build, browser test"
	@echo "make site    strict build of the site into site/"
	@echo "make site-offline  a zip of the site that works from file:// (offline/kexue-offline.zip)"
	@echo "make bench   time kexue against peer libraries; writes benchmarks/results.json (Performance page)"
	@echo "make clean   remove .venv, node_modules, site/ and caches"
	@echo "make lock    refresh constraints.txt from the current venv"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

# pip -qq: this machine's pip config names absent find-links folders; hide those warnings, keep errors.
$(DOCS_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	@echo "==> installing kexue with the docs extra into $(VENV)"
	$(BIN)/python -m pip install -qq --no-compile -c constraints.txt -e '.[docs]'
	@touch $@

# One pip run for both extras (a second resolution cost about half a minute); it satisfies the docs
# stamp too, so make serve after make test installs nothing.
$(TEST_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	@echo "==> installing kexue with the docs and test extras into $(VENV)"
	$(BIN)/python -m pip install -qq --no-compile -c constraints.txt -e '.[docs,test]'
	@touch $(DOCS_STAMP) $@

$(NODE_STAMP): package.json package-lock.json
	@echo "==> installing npm assets (KaTeX, playwright-core)"
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Headless Chromium for the browser test: Debian's package, installed if missing.
browser-deps:
	@bash scripts/ensure-chromium.sh

# serve and site reuse fence outputs from .cache/fences (keyed on the code, the kexue source and
# library versions); make test and CI always build cold. KEXUE_FENCE_CACHE=off disables it.
KEXUE_FENCE_CACHE ?= .cache/fences

serve: $(DOCS_STAMP) $(NODE_STAMP)
	KEXUE_FENCE_CACHE=$(KEXUE_FENCE_CACHE) $(BIN)/mkdocs serve --dev-addr $(ADDR) --livereload

# OFFLINE_ZIP=offline/kexue-offline.zip ships that zip with the site and links it from the home page.
OFFLINE_ZIP ?=

site: $(DOCS_STAMP) $(NODE_STAMP)
	KEXUE_FENCE_CACHE=$(KEXUE_FENCE_CACHE) KEXUE_OFFLINE_ZIP=$(OFFLINE_ZIP) $(BIN)/mkdocs build --strict --site-dir site

# Material's offline plugin: .html links and an inlined search index, so the unpacked zip works
# from file:// with search and navigation (the search worker's polyfill is served locally).
site-offline: $(DOCS_STAMP) $(NODE_STAMP)
	rm -rf offline
	KEXUE_FENCE_CACHE=$(KEXUE_FENCE_CACHE) KEXUE_OFFLINE=true $(BIN)/mkdocs build --strict --site-dir offline/kexue
	cd offline && ../$(BIN)/python -m zipfile -c kexue-offline.zip kexue
	@echo "offline/kexue-offline.zip: unpack it and open kexue/index.html"

test: $(TEST_STAMP) $(NODE_STAMP) browser-deps
	env -u KEXUE_FENCE_CACHE $(BIN)/python -m pytest

# Benchmarks need the peers from the test extra; not part of make test (timings are not assertions).
bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks

lock: | $(BIN)/python
	$(BIN)/python -m pip freeze --exclude-editable | sed -e 's/+cpu$$//' > constraints.txt
	@echo "constraints.txt refreshed ($$(wc -l < constraints.txt) pins)"

clean:
	rm -rf $(VENV) node_modules site offline dist .pytest_cache .hypothesis .cache artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
