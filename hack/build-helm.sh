#!/usr/bin/env bash
# Builds helm from its Go module into .capstan/bin/helm (no prebuilt binary is downloaded).
# Skips the build when the pinned version is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CAPSTAN_BIN:-$root/.capstan/bin}"
# One pinned release of Helm 3: the v3 line is what most charts and CI images still use.
version=v3.22.0
# Kubernetes version helm assumes offline (helm template, lint): its client-go's, 0.37 -> 1.37,
# stamped as helm's own Makefile does (unstamped it claims v1.20).
k8s_minor=37
stamp="$bin/.helm-$version-k8s1.$k8s_minor"
if [ -f "$stamp" ] && [ -x "$bin/helm" ]; then
  echo "helm $version already built in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "Go >= 1.26 is required to build helm"; exit 1; }
mkdir -p "$bin"
start=$SECONDS
echo "building helm $version"
# `go install mod@version` builds in module mode with helm's own go.mod and go.sum.
h=helm.sh/helm/v3
ldflags="-s -w -X $h/internal/version.version=$version -X $h/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags="$ldflags -X $h/$pkg.k8sVersionMajor=1 -X $h/$pkg.k8sVersionMinor=$k8s_minor"
done
CGO_ENABLED=0 GOBIN="$bin" go install -trimpath -ldflags "$ldflags" "$h/cmd/helm@$version"
rm -f "$bin"/.helm-*
touch "$stamp"
echo "built helm $version in $((SECONDS - start)) s"
