# Targets for the local end-to-end control plane; included by the Makefile.
#
#   make e2e-components  build (once) the control-plane binaries into ~/.cache/envroll
#   make cluster-up      start a local cluster; then: eval "$$(e2e/cluster env)"
#   make cluster-status  show its processes and nodes
#   make cluster-down    delete it
#   make e2e             fresh cluster -> cargo test --test 'e2e_*' -> delete cluster
#                        (the cluster is deleted even when the tests fail; the
#                        tests' exit code is make's exit code)
#
# The end-to-end tests are #[ignore]d, so that a plain `cargo test` never
# counts them as passed. --include-ignored runs them here, and with them the
# few tests of tests/common that need no cluster.
#
# E2E_TESTS selects the integration-test targets (a cargo --test glob) and
# E2E_CARGO_FLAGS adds cargo flags, e.g. make e2e E2E_CARGO_FLAGS='--locked --release';
# E2E_TEST_ARGS goes to the test harness, e.g. E2E_TEST_ARGS=--nocapture.

E2E_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CARGO ?= cargo
E2E_TESTS ?= e2e_*
E2E_CARGO_FLAGS ?= --locked
E2E_TEST_ARGS ?=

.PHONY: e2e-components cluster-up cluster-down cluster-status e2e

e2e-components:
	$(E2E_DIR)/components build

cluster-up:
	@$(E2E_DIR)/cluster up

cluster-down:
	@$(E2E_DIR)/cluster down

cluster-status:
	@$(E2E_DIR)/cluster status

# Compile the tests first so a compile error does not cost a cluster start,
# then run them against a cluster that lives only as long as the test run.
# The operator scenarios run twice: with the namespaced install's Role in each
# watched namespace (the default identity), then with the cluster-wide
# install's ClusterRole.
e2e:
	$(E2E_DIR)/components build
	$(CARGO) test $(E2E_CARGO_FLAGS) --test '$(E2E_TESTS)' --no-run
	$(E2E_DIR)/cluster run sh -c "$(CARGO) test $(E2E_CARGO_FLAGS) --test '$(E2E_TESTS)' -- --include-ignored $(E2E_TEST_ARGS) && \
	  ENVROLL_E2E_IDENTITY=cluster-wide $(CARGO) test $(E2E_CARGO_FLAGS) --test e2e_operator -- --include-ignored $(E2E_TEST_ARGS)"
