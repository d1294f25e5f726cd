package main

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/node"
)

func clusterCACommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ca DIR",
		Short: "Make the cluster CA in DIR (ca.pem, ca-key.pem, cluster-id; never overwrites)",
		Long: `Makes the cluster CA once per cluster: DIR/ca.pem (every node's ca_file),
DIR/ca-key.pem (mode 0600: keep it offline, it makes members) and DIR/cluster-id,
a random id that every node certificate of this cluster names. To rotate the CA,
copy the old DIR/cluster-id into a new DIR first: the new CA keeps the cluster's id.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			id, err := node.CreateClusterCA(args[0])
			if err != nil {
				return err
			}
			fmt.Printf("made the cluster CA of cluster %s in %s\n", id, args[0])
			return nil
		},
	}
}

func issueNodeCommand() *cobra.Command {
	var caDir, outDir string
	var ips []net.IP
	var dnsNames []string
	cmd := &cobra.Command{
		Use:   "issue NODE-ID",
		Short: "Issue node NODE-ID's cluster certificate from the cluster CA (OUT/node.pem, OUT/node-key.pem)",
		Long: `Issues the certificate a node presents on every cluster connection. It names the node
as xksproxy://CLUSTER-ID/node/NODE-ID, and nodes admit a peer only as the node its
certificate names. NODE-ID is the node's node_id. --ip and --dns name the addresses
the admin CLI reaches the node's admin API at (127.0.0.1 by default). Removing a node
revokes every certificate issued for it until then: to re-admit it, issue it a new one
(more than a minute after the removal).`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if len(ips) == 0 && len(dnsNames) == 0 {
				ips = []net.IP{net.IPv4(127, 0, 0, 1)}
			}
			identity, err := node.IssueNodeCertificate(caDir, node.NodeCertificate{NodeID: args[0], IPs: ips, DNSNames: dnsNames,
				CertPath: filepath.Join(outDir, "node.pem"), KeyPath: filepath.Join(outDir, "node-key.pem")})
			if err != nil {
				return err
			}
			fmt.Printf("issued %s in %s (node.pem, node-key.pem)\n", identity, outDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&caDir, "ca-dir", ".", "the cluster CA's directory (made by `cluster-keys ca`)")
	cmd.Flags().StringVar(&outDir, "out", ".", "the directory to write node.pem and node-key.pem to")
	cmd.Flags().IPSliceVar(&ips, "ip", nil, "an IP address the certificate is valid for (repeatable)")
	cmd.Flags().StringSliceVar(&dnsNames, "dns", nil, "a DNS name the certificate is valid for (repeatable)")
	return cmd
}
