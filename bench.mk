# Benchmarks of envroll against Stakater Reloader on a local control plane; included by the Makefile.
#
#   make bench RELOADER_BIN=/path/to/reloader         the full run (about an hour); writes BENCHMARKS.md
#   make bench-quick RELOADER_BIN=/path/to/reloader   small numbers (under 5 minutes); writes
#                                                     target/bench/BENCHMARKS-quick.md
#
# RELOADER_BIN is a Reloader binary built beforehand (go build of a release, outside this
# repository); without it the harness refuses to run. RELOADER_VERSION names it in the report
# (default: a vX.Y.Z found in its path). BENCH_TOOLS=envroll measures envroll alone.
# ENVROLL_BIN=path measures that envroll binary instead of building target/release/envroll.
# BENCH_OUT overrides the report's path; BENCH_<NAME> overrides one number of the profile, e.g.
# BENCH_DEPLOYMENTS=500 or BENCH_IDLE_SECONDS=120 (see PROFILES in e2e/bench/bench.py).
# Everything the harness starts (operators, clusters) is stopped when it ends, also on Ctrl-C.

BENCH_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CARGO ?= cargo
PYTHON3 ?= python3
RELOADER_BIN ?=
RELOADER_VERSION ?=
ENVROLL_BIN ?=
BENCH_TOOLS ?= envroll,reloader
BENCH_OUT ?=

.PHONY: bench bench-quick bench-build

bench-build:
ifeq ($(ENVROLL_BIN),)
	$(CARGO) build --release --locked
endif
	$(BENCH_DIR)/e2e/components build >/dev/null

bench: bench-build
	RELOADER_BIN="$(RELOADER_BIN)" RELOADER_VERSION="$(RELOADER_VERSION)" BENCH_TOOLS="$(BENCH_TOOLS)" \
	  ENVROLL_BIN="$(ENVROLL_BIN)" \
	  $(PYTHON3) $(BENCH_DIR)/e2e/bench/bench.py --profile full $(if $(BENCH_OUT),--out $(BENCH_OUT)) \
	  --command "make bench"

bench-quick: bench-build
	RELOADER_BIN="$(RELOADER_BIN)" RELOADER_VERSION="$(RELOADER_VERSION)" BENCH_TOOLS="$(BENCH_TOOLS)" \
	  ENVROLL_BIN="$(ENVROLL_BIN)" \
	  $(PYTHON3) $(BENCH_DIR)/e2e/bench/bench.py --profile quick $(if $(BENCH_OUT),--out $(BENCH_OUT)) \
	  --command "make bench-quick"
