#!/usr/bin/env bash
# Builds one command of an upstream Go module pinned by a wrapper module in hack/NAME/ (go.mod,
# go.sum, and a tools.go importing the command so `go mod tidy` keeps it) into
# .capstan/bin/BINARY, static and stripped like upstream's release builds. Skips the build when
# the binary there was built from the same go.mod and go.sum (a stamp file beside it).
# usage: build-go-command.sh NAME MODULE PACKAGE BINARY [LDFLAGS...]  (@VERSION@ in LDFLAGS is
# replaced by MODULE's pinned version)
set -euo pipefail
name=$1 module=$2 package=$3 binary=$4
shift 4
here="$(cd "$(dirname "$0")/$name" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${CAPSTAN_BIN:-$root/.capstan/bin}"
version=$(awk -v m="$module" '$1=="require" && $2==m {print $3}' "$here/go.mod")
stamp="$bin/.$name-$version-$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
if [ -f "$stamp" ] && [ -x "$bin/$binary" ]; then
  echo "$name $version already built in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "Go >= 1.26.6 is required to build $name"; exit 1; }
mkdir -p "$bin"
start=$SECONDS
echo "building $name $version ($package)"
ldflags="-s -w ${*//@VERSION@/$version}"
# A wrapper module rather than `go install ...@version`: go.sum pins every dependency, and
# `go install` refuses a module whose go.mod has replace lines (SeaweedFS's has).
cd "$here"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/$binary.tmp" "$package"
mv "$bin/$binary.tmp" "$bin/$binary"
rm -f "$bin/.$name"-*
touch "$stamp"
echo "built $binary $version in $((SECONDS - start)) s"
