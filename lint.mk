# Checks of what gets deployed: the Helm chart, the kustomize manifests and the
# Dockerfile; included by the Makefile.
#
#   make lint-tools    build (once) helm, kubeconform, hadolint and the Kubernetes
#                      JSON schemas into ~/.cache/envroll (see hack/lint-tools)
#   make lint-deploy   helm lint both modes of the chart; validate the helm and
#                      kustomize renderings against the schemas of the test
#                      control plane's Kubernetes version (strict: unknown
#                      fields fail); check that the namespaced renderings hold no
#                      cluster-scoped object; hadolint the Dockerfile
#   make image-binary  build the image's static musl binary without a container
#                      engine and check that it is static and runs
#
# No network is needed once the tools are built: kubeconform reads local
# schemas only. Renderings are kept in target/lint-deploy/ for inspection.

LINT_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
LINT_TOOLS := $(LINT_DIR)/hack/lint-tools
LINT_OUT := $(LINT_DIR)/target/lint-deploy
LINT_CHART := $(LINT_DIR)/charts/envroll

HELM := $(LINT_TOOLS) exec helm
KUBECTL := $(LINT_TOOLS) exec kubectl
HADOLINT := $(LINT_TOOLS) exec hadolint
# kubeconform -strict with the local schemas (and -kubernetes-version) filled in.
KUBECONFORM := $(LINT_TOOLS) kubeconform
# The Kubernetes version helm renders for: the one the schemas describe.
LINT_KUBE_VERSION = $(shell sed -n 's/^KUBE_VERSION=//p' $(LINT_DIR)/e2e/versions.env)
# Values of the chart's namespaced mode in these checks.
LINT_NAMESPACED_VALUES := --set watchGlobally=false --set 'namespaces={a,b}'

.PHONY: lint-tools lint-deploy image-binary

lint-tools:
	$(LINT_TOOLS) build

lint-deploy: lint-tools
	rm -rf $(LINT_OUT)
	mkdir -p $(LINT_OUT)
	@echo '--- helm lint (cluster-wide, namespaced)'
	$(HELM) lint --strict $(LINT_CHART)
	$(HELM) lint --strict $(LINT_CHART) $(LINT_NAMESPACED_VALUES)
	@echo '--- render: helm template, kubectl kustomize'
	$(HELM) template envroll $(LINT_CHART) --namespace envroll \
		--kube-version $(LINT_KUBE_VERSION) >$(LINT_OUT)/helm-cluster-wide.yaml
	$(HELM) template envroll $(LINT_CHART) --namespace envroll $(LINT_NAMESPACED_VALUES) \
		--kube-version $(LINT_KUBE_VERSION) >$(LINT_OUT)/helm-namespaced.yaml
	$(KUBECTL) kustomize $(LINT_DIR)/manifests/cluster-wide >$(LINT_OUT)/kustomize-cluster-wide.yaml
	$(KUBECTL) kustomize $(LINT_DIR)/manifests/namespaced >$(LINT_OUT)/kustomize-namespaced.yaml
	@echo '--- kubeconform: the schemas reject what they should'
	$(KUBECONFORM) -summary $(LINT_DIR)/hack/testdata/kubeconform/valid.yaml
	@for f in $(LINT_DIR)/hack/testdata/kubeconform/invalid/*.yaml; do \
		if $(KUBECONFORM) "$$f" >/dev/null 2>&1; then \
			echo "kubeconform accepted $$f, which is invalid: the schemas are too loose"; exit 1; \
		fi; \
	done; echo "every manifest under hack/testdata/kubeconform/invalid/ is rejected"
	@echo '--- kubeconform: the renderings'
	$(KUBECONFORM) -summary $(LINT_OUT)/helm-cluster-wide.yaml $(LINT_OUT)/helm-namespaced.yaml \
		$(LINT_OUT)/kustomize-cluster-wide.yaml $(LINT_OUT)/kustomize-namespaced.yaml
	@echo '--- namespaced renderings: no cluster-scoped object'
	$(LINT_TOOLS) scope none $(LINT_OUT)/helm-namespaced.yaml $(LINT_OUT)/kustomize-namespaced.yaml
	$(LINT_TOOLS) scope some $(LINT_OUT)/helm-cluster-wide.yaml
	$(LINT_TOOLS) scope some $(LINT_OUT)/kustomize-cluster-wide.yaml
	@echo '--- hadolint'
	$(HADOLINT) --no-color --failure-threshold style $(LINT_DIR)/Dockerfile

image-binary:
	$(LINT_DIR)/hack/image-binary
