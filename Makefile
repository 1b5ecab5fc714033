# Local AI Lab — labbuild entry points. `make demo` and `make test` are the two
# commands a newcomer types; the roadmap's install targets map onto labbuild.
VENV      := .venv
LABBUILD  := $(VENV)/bin/labbuild
PYTEST    := $(VENV)/bin/pytest
VERSION   ?= 0.5.0
INSTALL_DIR ?= $(HOME)/local-ai-lab

.PHONY: help venv demo test bench validate clean install-profile install-base

help:
	@echo "make demo            venv + labbuild on the shipped blueprints (no network)"
	@echo "make test            the whole test suite (installs and starts what it needs)"
	@echo "make bench           the benchmarks in bench/"
	@echo "make install-all-phaseN / install-SERVICE   see below"

venv: $(LABBUILD)
$(LABBUILD): pyproject.toml
	scripts/bootstrap.sh --no-system
	@touch $(LABBUILD)

# The main job on the shipped lab, offline: check, then build the default
# profile's release 0.5.0 (recorded in lockfiles/releases/, so this reproduces
# its recorded sha256 byte for byte) and verify it.
demo: venv
	$(LABBUILD) validate
	$(LABBUILD) lock --check
	$(LABBUILD) release 0.5.0 --out dist
	$(LABBUILD) verify dist/local-ai-lab-phase1-0.5.0.tar.gz

test:
	scripts/bootstrap.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PYTEST) -n 2 --dist worksteal -q

bench: venv
	scripts/bootstrap.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python bench/run.py

validate: venv
	$(LABBUILD) validate

clean:
	rm -rf dist .pytest_cache

# --- the roadmap's commands -------------------------------------------------
# install-all-phaseN: release profile phaseN at $(VERSION) and install it into
# $(INSTALL_DIR). install-SERVICE: the same for the first phase profile that
# contains SERVICE (labbuild installs whole profiles, never lone services).
install-all-phase%: venv
	$(LABBUILD) release $(VERSION) --profile phase$* --out dist
	$(LABBUILD) install dist/local-ai-lab-phase$*-$(VERSION).tar.gz --dir $(INSTALL_DIR)

install-base: venv
	$(LABBUILD) release $(VERSION) --profile base --out dist
	$(LABBUILD) install dist/local-ai-lab-base-$(VERSION).tar.gz --dir $(INSTALL_DIR)

install-%: venv
	@profile=$$($(VENV)/bin/python -c "import sys; from builder.blueprint import load_lab; lab = load_lab('.'); \
	  print(next((p for p in ['base','phase1','phase2','phase3','phase4'] if p in lab.profiles and '$*' in lab.profile_closure(p)), ''))"); \
	  if [ -z "$$profile" ]; then echo "no profile contains service '$*' (see blueprints/lab.toml)"; exit 1; fi; \
	  echo "'$*' first ships in profile $$profile"; \
	  $(MAKE) --no-print-directory install-profile PROFILE=$$profile

install-profile: venv
	$(LABBUILD) release $(VERSION) --profile $(PROFILE) --out dist
	$(LABBUILD) install dist/local-ai-lab-$(PROFILE)-$(VERSION).tar.gz --dir $(INSTALL_DIR)
