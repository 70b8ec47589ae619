//go:build tools

// Keeps `go mod tidy` from dropping Kueue: no package of this module imports it otherwise.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
