#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the S3 endpoint on loopback) from the Go module pinned in
# hack/seaweedfs/go.mod into .capstan/bin/weed, cached by go.mod and go.sum. About 8-10 minutes
# on 2 cores, once per machine.
exec bash "$(dirname "$0")/build-go-command.sh" seaweedfs \
  github.com/seaweedfs/seaweedfs github.com/seaweedfs/seaweedfs/weed weed
