#!/usr/bin/env bash
# Builds Kueue's controller manager (cmd/kueue only) from the Go module pinned in
# hack/kueue/go.mod into .capstan/bin/kueue, cached by go.mod and go.sum (the CRDs and webhook
# configurations are read from the module cache: hack/localcluster/kueue.py). About 6 minutes on
# a quiet 2-core machine, 21 at load 12-19; once per machine.
exec bash "$(dirname "$0")/build-go-command.sh" kueue \
  sigs.k8s.io/kueue sigs.k8s.io/kueue/cmd/kueue kueue "-X sigs.k8s.io/kueue/pkg/version.GitVersion=@VERSION@"
