//go:build tools

// Package tools only pins the main packages hack/cluster/build.sh builds.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
