# cart-cohort — the two commands a new user needs:
#   make run    set up .venv from the lock, simulate the demo cohort, run the workflow, build the report
#   make test   same set-up, then the test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lock-installed
CORES  ?= 2
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES) --printshellcmds
DEMO   := resources/demo/samples.tsv

.PHONY: help venv demo run report test lint fmt clean slurm-test envs-check bench browser-deps

help:
	@echo "make run    - set up .venv, simulate the demo cohort, run the workflow, build results/report.html"
	@echo "make test   - set up .venv and the demo cohort, run the test suite"
	@echo "make lint   - snakemake --lint, snakefmt --check, layout limits, config docs up to date"
	@echo "make bench  - scale benchmark (20k/200k/1M cells, one-script baseline, 1,000-library dry run) -> benchmarks/results.tsv"

venv: $(STAMP)

$(STAMP): requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "cart-cohort needs Python 3.11, found " + sys.version.split()[0]' \
		|| { echo "ERROR: Python 3.11 is required (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@touch $@

demo: $(DEMO)

$(DEMO): $(STAMP) workflow/scripts/simulate_demo.py $(wildcard workflow/scripts/cartcohort/datasets/*.py)
	$(BIN)/python workflow/scripts/simulate_demo.py --out resources/demo --seed 0
	@touch $@

run: $(STAMP) $(DEMO)
	$(SNAKEMAKE)
	$(BIN)/snakemake --report results/report.html
	@echo "Report: results/report.html"

# Debian's chromium + chromium-driver for the cell browser test (installed as root)
browser-deps:
	tools/install_chromium.sh

test: $(STAMP) $(DEMO) browser-deps
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/python tools/check_layout.py
	$(BIN)/python tools/config_doc.py --check

fmt: $(STAMP)
	$(BIN)/snakefmt Snakefile workflow/rules

envs-check: $(STAMP) $(DEMO) browser-deps
	$(BIN)/python tools/envs_check.py

BENCH_SCALES ?= 20k,200k,1M
bench: $(STAMP)
	$(BIN)/python tools/bench.py --scales $(BENCH_SCALES) --cores $(CORES) --dry-run-libraries 1000

slurm-test: $(STAMP)
	tools/slurm/slurm_test.sh

clean:
	rm -rf results logs benchmarks/*/ .snakemake .envs-check
