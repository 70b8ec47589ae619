#!/usr/bin/env bash
# Builds Prometheus's server from the Go module pinned in hack/prometheus/go.mod into
# .capstan/bin/prometheus. Skips the build when the binary there was built from the same go.mod
# and go.sum. Only cmd/prometheus, with Kubernetes service discovery alone and no built-in web UI.
set -euo pipefail
here="$(cd "$(dirname "$0")/prometheus" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${CAPSTAN_BIN:-$root/.capstan/bin}"
version=$(awk '$1=="require" && $2=="github.com/prometheus/prometheus" {print $3}' "$here/go.mod")
stamp="$bin/.prometheus-$version-$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-12)"
if [ -f "$stamp" ] && [ -x "$bin/prometheus" ]; then
  echo "prometheus $version already built in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "Go >= 1.26.7 is required to build Prometheus"; exit 1; }
mkdir -p "$bin"
start=$SECONDS
echo "building prometheus $version (cmd/prometheus)"
# Tags: remove_all_sd + enable_kubernetes_sd leave out the cloud service discoveries (AWS, Azure,
# GCE, ... and their SDKs), which are most of the compile; without `builtinassets` the React UI
# is not embedded (the HTTP API, all the tests and the operator use, is unaffected). netgo as
# upstream's release builds.
cd "$here"
CGO_ENABLED=0 go build -trimpath -tags "netgo remove_all_sd enable_kubernetes_sd" \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=${version#v}" \
  -o "$bin/prometheus" github.com/prometheus/prometheus/cmd/prometheus
rm -f "$bin"/.prometheus-*
touch "$stamp"
echo "built prometheus $version in $((SECONDS - start)) s"
