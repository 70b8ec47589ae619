//go:build tools

// Keeps `go mod tidy` from dropping the requirement: no package of this module imports Prometheus
// otherwise.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
