//go:build tools

// Package tools only pins the main packages hack/cluster/build.sh builds.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
