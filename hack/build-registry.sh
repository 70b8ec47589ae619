#!/usr/bin/env bash
# Builds the OCI registry (CNCF distribution) from its Go module into .capstan/bin/registry.
# Skips the build when the pinned version is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CAPSTAN_BIN:-$root/.capstan/bin}"
# distribution v3: the registry behind Docker Hub, GHCR's API and Harbor; served by the Go proxy.
version=v3.1.2
stamp="$bin/.registry-$version"
if [ -f "$stamp" ] && [ -x "$bin/registry" ]; then
  echo "registry $version already built in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "Go >= 1.26 is required to build the registry"; exit 1; }
mkdir -p "$bin"
start=$SECONDS
echo "building registry $version"
d=github.com/distribution/distribution/v3
CGO_ENABLED=0 GOBIN="$bin" go install -trimpath -ldflags "-s -w -X $d/version.version=$version" \
  "$d/cmd/registry@$version"
rm -f "$bin"/.registry-*
touch "$stamp"
echo "built registry $version in $((SECONDS - start)) s"
