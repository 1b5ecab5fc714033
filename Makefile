# Local AI Lab — labbuild entry points. `make demo` and `make test` are the two
# commands a newcomer types; the roadmap's install targets map onto labbuild.
VENV      := .venv
LABBUILD  := $(VENV)/bin/labbuild
PYTEST    := $(VENV)/bin/pytest
VERSION   ?= 0.0.0-demo
INSTALL_DIR ?= $(HOME)/local-ai-lab

.PHONY: help venv demo test bench validate lock-check clean

help:
	@echo "make demo            venv + labbuild on the shipped blueprints (no network)"
	@echo "make test            the whole test suite (installs and starts what it needs)"
	@echo "make bench           the benchmarks in bench/"
	@echo "make install-all-phaseN / install-SERVICE   see below"

venv: $(LABBUILD)
$(LABBUILD): pyproject.toml
	scripts/bootstrap.sh --no-system
	@touch $(LABBUILD)

demo: venv
	$(LABBUILD) validate

test:
	scripts/bootstrap.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PYTEST) -n 2 -q

bench: venv
	scripts/bootstrap.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python bench/run.py

validate: venv
	$(LABBUILD) validate

clean:
	rm -rf dist .pytest_cache

# --- the roadmap's commands -------------------------------------------------
install-all-phase%:
	@echo "will run: labbuild release <version> --profile phase$* && labbuild install dist/local-ai-lab-phase$*-<version>.tar.gz --dir $(INSTALL_DIR)"

install-%:
	@echo "will run: labbuild install of the profile that contains '$*' (see labbuild --help)"
