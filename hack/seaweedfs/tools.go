//go:build tools

// Package tools pins the upstream command this module builds (weed), so that
// `go mod tidy` keeps it in go.mod.
package tools

import (
	_ "github.com/seaweedfs/seaweedfs/weed"
)
