# Capstan developer entry points. Every target does its own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := .capstan/bin
PYTEST_ARGS ?=
# IMAGES_FLAGS: extra flags of `python -m hack.images` (--prune: drop buildah's copy and the wheelhouse after the push).
IMAGES_FLAGS ?=
CHECK_PYTHON = $(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required, found " + sys.version'

.PHONY: install control-plane seaweedfs prometheus kueue image-tools registry images test demo cluster-up cluster-down lint unit clean crds

install: $(VENV)/.installed control-plane seaweedfs prometheus kueue

$(VENV)/.installed: pyproject.toml
	@$(CHECK_PYTHON)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

control-plane: image-tools registry
	@command -v go >/dev/null || { echo "Go >= 1.26 is required to build the control plane (https://go.dev/dl/)"; exit 1; }
	bash hack/localcluster/build.sh
	bash hack/build-helm.sh

registry:
	bash hack/build-registry.sh

# The S3 endpoint of the local cluster and the tests (SeaweedFS's `weed`, ~10 min once per machine).
seaweedfs:
	bash hack/build-seaweedfs.sh

# The local cluster's and the tests' metrics (cmd/prometheus only, without the web UI's assets).
prometheus:
	bash hack/build-prometheus.sh

# Kueue's controller manager (cmd/kueue only, ~6-10 min once per machine), for the Kueue tests.
kueue:
	bash hack/build-kueue.sh

# Debian packages: mmdebstrap builds the base root filesystem, buildah the images (no daemon),
# skopeo pulls them on the local node.
IMAGE_TOOLS := buildah mmdebstrap skopeo
image-tools:
	@missing=$$(for t in $(IMAGE_TOOLS); do command -v $$t >/dev/null || echo $$t; done); \
	if [ -n "$$missing" ]; then \
	  command -v apt-get >/dev/null || { echo "install: $$missing (Debian packages)"; exit 1; }; \
	  echo "installing $$missing"; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null \
	    || { $$sudo apt-get update -q >/dev/null && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	fi

# The operator and trainer images, built from images/*/Containerfile and pushed to the
# registry storage every local cluster serves; cached by content. The node's Python runs it
# (standard library only), so `make test` builds the images before the 6 GB virtualenv exists:
# a disk's peak is the build's or the tests', never both.
images: image-tools registry
	@$(CHECK_PYTHON)
	$(PYTHON) -m hack.images $(IMAGES_FLAGS)

# Regenerate manifests/crds/ and charts/capstan/crds/ from the API models.
crds: $(VENV)/.installed
	$(PY) -m capstan_api.crdgen

test: images install
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(VENV)/.installed seaweedfs prometheus
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# CLUSTER_UP_FLAGS: extra flags of `python -m hack.localcluster up` (--kueue also runs Kueue).
CLUSTER_UP_FLAGS ?=
cluster-up: install images
	$(PY) -m hack.localcluster up $(CLUSTER_UP_FLAGS)

cluster-down:
	@if [ -x $(PY) ]; then $(PY) -m hack.localcluster down; else echo "nothing to stop"; fi

demo: install images
	bash hack/demo.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m capstan_api.crdgen --check

clean: cluster-down
	rm -rf .capstan $(VENV)
