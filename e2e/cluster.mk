# Targets for the local end-to-end control plane; included by the Makefile.
#
#   make e2e-components  build (once) the control-plane binaries into ~/.cache/envroll
#   make cluster-up      start a local cluster; then: eval "$$(e2e/cluster env)"
#   make cluster-status  show its processes and nodes
#   make cluster-down    delete it
#   make e2e             fresh cluster -> cargo test --test 'e2e_*' -> delete cluster
#                        (the cluster is deleted even when the tests fail; the
#                        tests' exit code is make's exit code). The targets that
#                        need the real node ($(E2E_REAL_NODE_TESTS)) are left out.
#   make e2e-kubelet     fresh cluster with a real kubelet node (e2e/real-node)
#                        -> the kubelet facts suite and envroll on the real node
#                        (tests/e2e_kubelet_envroll.rs) -> delete cluster and node.
#                        Needs root; exits 3 where this machine cannot run a node.
#
# The end-to-end tests are #[ignore]d, so that a plain `cargo test` never
# counts them as passed. --include-ignored runs them here, and with them the
# few tests of tests/common that need no cluster.
#
# E2E_TESTS selects the integration-test targets of make e2e (a cargo --test glob;
# by default every tests/e2e_*.rs but those of the real node) and
# E2E_CARGO_FLAGS adds cargo flags, e.g. make e2e E2E_CARGO_FLAGS='--locked --release';
# E2E_TEST_ARGS goes to the test harness, e.g. E2E_TEST_ARGS=--nocapture, and
# E2E_KUBELET_TEST_ARGS to the harness of make e2e-kubelet.

E2E_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CARGO ?= cargo
E2E_TESTS ?=
E2E_CARGO_FLAGS ?= --locked
E2E_TEST_ARGS ?=
# The real node's tests mostly wait for the kubelet: all of them at once. --nocapture shows
# the observed values (the `fact |` and `envroll |` lines).
E2E_KUBELET_TEST_ARGS ?= --test-threads=16 --nocapture
# Test targets that fail by design without the real node.
E2E_REAL_NODE_TESTS := e2e_kubelet_facts e2e_kubelet_envroll
E2E_REAL_NODE_TARGETS = $(foreach t,$(E2E_REAL_NODE_TESTS),--test $(t))
E2E_KWOK_TESTS = $(filter-out $(E2E_REAL_NODE_TESTS),$(patsubst tests/%.rs,%,$(wildcard tests/e2e_*.rs)))
E2E_TEST_TARGETS = $(if $(E2E_TESTS),--test '$(E2E_TESTS)',$(foreach t,$(E2E_KWOK_TESTS),--test $(t)))

.PHONY: e2e-components cluster-up cluster-down cluster-status e2e e2e-kubelet

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
	$(CARGO) test $(E2E_CARGO_FLAGS) $(E2E_TEST_TARGETS) --no-run
	$(E2E_DIR)/cluster run sh -c "$(CARGO) test $(E2E_CARGO_FLAGS) $(E2E_TEST_TARGETS) -- --include-ignored $(E2E_TEST_ARGS) && \
	  ENVROLL_E2E_IDENTITY=cluster-wide $(CARGO) test $(E2E_CARGO_FLAGS) --test e2e_operator -- --include-ignored $(E2E_TEST_ARGS)"

# The decision matrix observed on a real kubelet, without and with envroll: the machine check
# first (exit 3 and the reason where it cannot run a node), then the builds, then a throw-away
# cluster with the real node.
e2e-kubelet:
	$(E2E_DIR)/real-node check
	$(E2E_DIR)/components build
	$(E2E_DIR)/components kubelet
	$(CARGO) test $(E2E_CARGO_FLAGS) $(E2E_REAL_NODE_TARGETS) --no-run
	$(E2E_DIR)/cluster run --real-node $(CARGO) test $(E2E_CARGO_FLAGS) $(E2E_REAL_NODE_TARGETS) -- --include-ignored $(E2E_KUBELET_TEST_ARGS)
