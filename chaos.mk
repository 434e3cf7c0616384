# The fault-injection harness (e2e/chaos/chaos.py); included by the Makefile.
#
#   make chaos                      the short profile: five fault classes, 60 changes each, a few
#                                   minutes on two cores
#   make chaos-long                 every fault class, at least 1,000 changes each (the same as
#                                   make chaos CHAOS_PROFILE=long)
#
# The seed is printed first; CHAOS_SEED=N repeats a run's sequence of changes and faults.
# CHAOS_CLASSES=a,b runs only those fault classes, CHAOS_CHANGES=N changes per class, and
# CHAOS_ARGS passes more arguments to the harness (e.g. --operator-arg=--debounce=1s).
# ENVROLL_BIN=path tests that binary instead of building target/release/envroll.
# Every run uses a throw-away cluster; everything it starts is stopped when it ends, also on
# Ctrl-C. Logs and results.json are kept in target/chaos/<date>-<seed>/.

CHAOS_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CARGO ?= cargo
PYTHON3 ?= python3
CHAOS_PROFILE ?= short
CHAOS_SEED ?=
CHAOS_CLASSES ?=
CHAOS_CHANGES ?=
CHAOS_ARGS ?=
ENVROLL_BIN ?=

CHAOS_RUN = CHAOS_SEED="$(CHAOS_SEED)" ENVROLL_BIN="$(ENVROLL_BIN)" $(PYTHON3) $(CHAOS_DIR)/e2e/chaos/chaos.py \
	$(if $(CHAOS_CLASSES),--classes $(CHAOS_CLASSES)) $(if $(CHAOS_CHANGES),--changes $(CHAOS_CHANGES)) $(CHAOS_ARGS)

.PHONY: chaos chaos-long chaos-build

chaos-build:
ifeq ($(ENVROLL_BIN),)
	$(CARGO) build --release --locked
endif
	$(CHAOS_DIR)/e2e/components build >/dev/null
	$(CHAOS_DIR)/e2e/chaos/build-faultproxy >/dev/null

chaos: chaos-build
	$(CHAOS_RUN) --profile $(CHAOS_PROFILE)

chaos-long: chaos-build
	$(CHAOS_RUN) --profile long
