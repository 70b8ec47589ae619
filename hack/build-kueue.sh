#!/usr/bin/env bash
# Builds Kueue's controller manager (cmd/kueue only) from the Go module pinned in hack/kueue/go.mod
# into .capstan/bin/kueue (the CRDs are read from the module cache: hack/localcluster/kueue.py).
# Skips the build when the binary there was built from the same go.mod and go.sum. About 6-10 minutes on 2 cores, once per machine.
set -euo pipefail
here="$(cd "$(dirname "$0")/kueue" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${CAPSTAN_BIN:-$root/.capstan/bin}"
version=$(awk '$1=="require" && $2=="sigs.k8s.io/kueue" {print $3}' "$here/go.mod")
stamp="$bin/.kueue-$version-$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
if [ -f "$stamp" ] && [ -x "$bin/kueue" ]; then
  echo "kueue $version already built in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "Go >= 1.26.6 is required to build Kueue"; exit 1; }
mkdir -p "$bin"
start=$SECONDS
echo "building kueue $version (cmd/kueue)"
# A wrapper module (as for SeaweedFS) so go.sum pins every dependency; static like upstream's image.
cd "$here"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$version" \
  -o "$bin/kueue.tmp" sigs.k8s.io/kueue/cmd/kueue
mv "$bin/kueue.tmp" "$bin/kueue"
rm -f "$bin"/.kueue-*
touch "$stamp"
echo "built kueue $version in $((SECONDS - start)) s"
