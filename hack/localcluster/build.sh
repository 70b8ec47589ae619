#!/usr/bin/env bash
# Builds etcd and the Kubernetes control plane into .capstan/bin from the
# pinned Go modules. Skips the build when the binaries already match the pin.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${CAPSTAN_BIN:-$root/.capstan/bin}"
version=$(cat "$here/K8S_VERSION")
mkdir -p "$bin"
cd "$here"
export CGO_ENABLED=0

# The node agent's /portForward server (the kubelet's streaming code); its own stamp, so an
# edit here does not relink the control plane.
pf_stamp="$bin/.built-portforward-$(cat go.sum portforward/*.go | sha256sum | cut -c1-12)"
if [ ! -f "$pf_stamp" ]; then
  start=$SECONDS
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$bin/capstan-portforward" ./portforward
  echo "built capstan-portforward in $((SECONDS - start)) s"
  rm -f "$bin"/.built-portforward-*
  touch "$pf_stamp"
fi

stamp="$bin/.built-$version-$(sha256sum "$here/go.sum" | cut -c1-12)"
if [ -f "$stamp" ]; then
  echo "control plane $version already built in $bin"
  exit 0
fi
minor=${version#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
# One binary at a time: each link needs ~2 GiB and the machines have 2 cores.
for target in etcd=go.etcd.io/etcd/server/v3 \
              kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
              kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
              kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler; do
  name=${target%%=*}; path=${target#*=}
  echo "building $name ($path)"
  start=$SECONDS
  go build -mod=mod -trimpath -ldflags "$ldflags" -o "$bin/$name" "$path"
  echo "built $name in $((SECONDS - start)) s"
done
find "$bin" -maxdepth 1 -name ".built-v*" -delete
touch "$stamp"
