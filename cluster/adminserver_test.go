package cluster_test

import (
	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/admin/server"
	"github.com/xksproxy/xksproxy/cluster"
)

// The cluster tests drive every node through its admin API, as operators
// do. The server imports package cluster, so only this external test file
// may start it; the internal tests call it through cluster.ServeAdmin.
func init() {
	cluster.ServeAdmin = func(n *cluster.Node, token, clientCAFile string, log zerolog.Logger) (string, func(), error) {
		s, err := server.Serve(n, server.Config{Listen: "127.0.0.1:0", Token: token, ClientCAFile: clientCAFile}, log)
		if err != nil {
			return "", nil, err
		}
		return s.Addr().String(), func() { s.Close() }, nil
	}
}
