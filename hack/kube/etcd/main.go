// etcd's server, built from the go.etcd.io/etcd/server/v3 module at the version Kubernetes
// requires (etcd's own main package lives in a module that is not published separately).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
