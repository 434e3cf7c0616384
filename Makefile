# envroll — build, test and demo targets. Cluster targets live in e2e/cluster.mk.

CARGO ?= cargo

.PHONY: all build release lint unit test demo explain-examples

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release --locked

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

# Unit and property tests of the pure modules, and the binary's own tests.
unit:
	$(CARGO) test --locked --lib --bins --test cli_explain

# Everything CI runs: formatting, lints, deployment lints (Helm chart, manifests, Dockerfile), unit
# and property tests, and the end-to-end suite on a local control plane.
test: lint lint-deploy unit e2e

explain-examples:
	$(CARGO) run --quiet -- explain -f examples/shop.yaml

# A local control plane, the operator, two ConfigMap changes, and what rolled out and why.
demo:
	e2e/demo

include e2e/cluster.mk
include lint.mk
include bench.mk
