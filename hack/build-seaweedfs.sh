#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the S3 endpoint on loopback) from the Go module pinned in
# hack/seaweedfs/go.mod into .capstan/bin/weed. Skips the build when the binary there was built
# from the same go.mod and go.sum. About 8-10 minutes on 2 cores, once per machine.
set -euo pipefail
here="$(cd "$(dirname "$0")/seaweedfs" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${CAPSTAN_BIN:-$root/.capstan/bin}"
version=$(awk '$1=="require" && $2=="github.com/seaweedfs/seaweedfs" {print $3}' "$here/go.mod")
stamp="$bin/.seaweedfs-$version-$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
if [ -f "$stamp" ] && [ -x "$bin/weed" ]; then
  echo "seaweedfs $version already built in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "Go >= 1.26.6 is required to build SeaweedFS"; exit 1; }
mkdir -p "$bin"
start=$SECONDS
echo "building seaweedfs $version (weed)"
# A wrapper module rather than `go install ...@version`: SeaweedFS's go.mod has a replace line,
# which `go install` refuses; go.mod here carries it. Static like upstream's release builds.
cd "$here"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/weed" github.com/seaweedfs/seaweedfs/weed
rm -f "$bin"/.seaweedfs-*
touch "$stamp"
echo "built weed $version in $((SECONDS - start)) s"
