# envroll — build, test and demo targets. Cluster targets live in e2e/cluster.mk.

CARGO ?= cargo

.PHONY: all build release lint unit test demo explain-examples fuzz fuzz-smoke

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release --locked

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

# Unit and property tests of the pure modules, the binary's own tests, the regression tests of
# crashes the fuzzers found, and notification delivery against a local HTTP receiver.
unit:
	$(CARGO) test --locked --lib --bins --test cli_explain --test cli_impact --test fuzz_regressions --test notify_receiver

# Everything CI runs: formatting, lints, deployment lints (Helm chart, manifests, Dockerfile), unit
# and property tests, the end-to-end suite on a local control plane, the decision matrix observed
# on a real kubelet node (e2e/real-node, needs root), and a short fault-injection
# run against the debug binary the end-to-end suite built. Its classes are those without a known
# open finding (docs/reliability.md); `make chaos` runs the whole short profile.
CI_CHAOS_CLASSES := http-errors,watch-cuts,operator-kill,leader-failover

test: lint lint-deploy unit e2e e2e-kubelet
	$(MAKE) chaos ENVROLL_BIN=$(CURDIR)/target/debug/envroll CHAOS_CLASSES=$(CI_CHAOS_CLASSES)

explain-examples:
	$(CARGO) run --quiet -- explain -f examples/shop.yaml

# A local control plane, the operator, two ConfigMap changes, and what rolled out and why.
demo:
	e2e/demo

# Coverage-guided fuzzing of the manifest reader and the annotation parsers (needs the nightly
# toolchain and `cargo install cargo-fuzz`). Targets run one after the other on one core each; a
# crash stops the run and leaves its input in fuzz/artifacts/<target>/. The corpus grows in
# fuzz/corpus/<target>/ (not committed), starting from the seeds in fuzz/seeds/.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := manifests annotations
FUZZ_FLAGS = -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

fuzz:
	cd fuzz && for target in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$target && \
	  cargo +nightly fuzz run --debug-assertions $$target corpus/$$target seeds/$$target -- \
	    -dict=seeds/$$target.dict $(FUZZ_FLAGS) || exit 1; \
	done

# The same, about 30 seconds per target: short enough for CI.
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=30

include e2e/cluster.mk
include lint.mk
include bench.mk
include chaos.mk
