// Package devenv prepares and runs a development proxy cluster in one
// directory: per node a SoftHSMv2 token, a TLS identity and a TOML file; a
// shared CA, cluster key ceremony material, admin token and demo key store;
// and the files that scripts and the bench harness read.
package devenv

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/node"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
	"github.com/xksproxy/xksproxy/internal/atomicfile"
)

// DefaultListen is where node 1's XKS API listens by default; node N
// listens on the next ports.
const DefaultListen = "127.0.0.1:8443"

// State is what dev chooses once and reuses on every later run, so that
// nothing is regenerated and nothing is lost.
type State struct {
	Region      string      `json:"region"`
	KeyStore    string      `json:"keyStore"`
	URIPath     string      `json:"uriPath"`
	AccessKeyID string      `json:"accessKeyId"`
	KeyID       string      `json:"keyId"`
	Nodes       []NodeState `json:"nodes"`
}

// NodeState is one node's identity and addresses.
type NodeState struct {
	ID           string `json:"id"`
	Listen       string `json:"listen"`
	HealthListen string `json:"healthListen"`
	ClusterBind  string `json:"clusterBind"`
	AdminListen  string `json:"adminListen"`
	GossipBind   string `json:"gossipBind"`
	TokenLabel   string `json:"tokenLabel"`
}

// Env is a prepared development directory.
type Env struct {
	Dir    string
	State  State
	secret string
	// resumed: DIR held a dev environment before this run, whose demo key
	// store the user may have changed since.
	resumed bool
	// skipped says why the self-check's round trip was left out: the user
	// disabled the demo key, removed dev's credential or the like.
	skipped []string
}

func (e *Env) path(parts ...string) string {
	return filepath.Join(append([]string{e.Dir}, parts...)...)
}

func (e *Env) nodeDir(i int, parts ...string) string {
	return e.path(append([]string{e.State.Nodes[i].ID}, parts...)...)
}

// Prepare loads DIR's state or creates it, for nodes nodes (0: as many as
// DIR holds, or 1). listen, when not empty, moves node 1's API there (node
// N takes the port N-1 above).
func Prepare(dir, listen string, nodes int) (*Env, error) {
	if nodes < 0 || nodes > 9 {
		return nil, errors.New("--nodes must be between 1 and 9")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: abs}
	if err := os.MkdirAll(e.path("secrets"), 0o700); err != nil {
		return nil, err
	}
	if err := e.loadOrCreateState(listen, nodes); err != nil {
		return nil, err
	}
	if err := e.prepareSecrets(); err != nil {
		return nil, err
	}
	ca, err := LoadOrCreateCA(e.path("tls"), "xksproxy dev CA")
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if err := ca.Issue(e.path("tls", "server.pem"), e.path("tls", "server-key.pem"), "localhost", []string{"localhost"}, loopback); err != nil {
		return nil, fmt.Errorf("dev server certificate: %w", err)
	}
	if _, err := node.EnsureClusterID(e.path("tls")); err != nil {
		return nil, fmt.Errorf("dev cluster id: %w", err)
	}
	for i, n := range e.State.Nodes {
		if err := os.MkdirAll(e.nodeDir(i), 0o700); err != nil {
			return nil, err
		}
		if err := e.issueClusterCertificate(i, loopback); err != nil {
			return nil, fmt.Errorf("%s cluster certificate: %w", n.ID, err)
		}
		if err := e.prepareToken(i); err != nil {
			return nil, err
		}
		if err := e.writeNodeConfig(i); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// issueClusterCertificate gives node i a certificate from the dev CA that
// names it (`cluster-keys issue`, as an operator would), replacing one from
// an earlier dev that names no node.
func (e *Env) issueClusterCertificate(i int, loopback []net.IP) error {
	certPath, keyPath := e.nodeDir(i, "cluster.pem"), e.nodeDir(i, "cluster-key.pem")
	if node.CertificateNames(certPath, e.path("tls"), e.State.Nodes[i].ID) {
		return nil
	}
	for _, p := range []string{certPath, keyPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	_, err := node.IssueNodeCertificate(e.path("tls"), node.NodeCertificate{NodeID: e.State.Nodes[i].ID,
		IPs: loopback, DNSNames: []string{"localhost"}, CertPath: certPath, KeyPath: keyPath})
	return err
}

func (e *Env) loadOrCreateState(listen string, nodes int) error {
	statePath := e.path("dev.json")
	b, err := os.ReadFile(statePath)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &e.State); err != nil {
			return fmt.Errorf("%s: %w", statePath, err)
		}
		e.resumed = true
		if nodes != 0 && nodes < len(e.State.Nodes) {
			// Dropping a node here would leave it a voter the cluster
			// waits for, and lose its saved ports.
			return fmt.Errorf("%s holds %d nodes; dev adds nodes but does not remove them (run with --nodes %d or more, or remove one with 'xksproxy cluster remove ID' and start afresh in a new directory)",
				e.Dir, len(e.State.Nodes), len(e.State.Nodes))
		}
	case errors.Is(err, os.ErrNotExist):
		cred := fsm.GenerateCredential()
		e.State = State{Region: "us-east-1", KeyStore: "demo", URIPath: "/demo/kms/xks/v1",
			AccessKeyID: cred.AccessKeyID, KeyID: "demo-key"}
		if err := atomicfile.WriteFile(e.path("secrets", "credential"), append(cred.Secret, '\n'), 0o600); err != nil {
			return err
		}
	default:
		return err
	}
	if listen == "" && len(e.State.Nodes) > 0 {
		listen = e.State.Nodes[0].Listen
	}
	if listen == "" {
		listen = DefaultListen
	}
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", listen, err)
	}
	if nodes == 0 {
		nodes = max(len(e.State.Nodes), 1)
	}
	for i := len(e.State.Nodes); i < nodes; i++ {
		e.State.Nodes = append(e.State.Nodes, NodeState{ID: fmt.Sprintf("node%d", i+1), TokenLabel: fmt.Sprintf("xksproxy-dev-node%d", i+1)})
	}
	taken := map[string]bool{}
	for i := range e.State.Nodes {
		n := &e.State.Nodes[i]
		n.Listen = net.JoinHostPort(host, strconv.Itoa(port+i))
		for _, addr := range []*string{&n.HealthListen, &n.ClusterBind, &n.AdminListen, &n.GossipBind} {
			if p, err := portOf(*addr); err != nil || (p >= port && p <= port+9) || taken[*addr] {
				if *addr, err = freePortOutside(port, port+9, taken); err != nil {
					return err
				}
			}
			taken[*addr] = true
		}
	}
	b, err = json.MarshalIndent(e.State, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(statePath, append(b, '\n'), 0o600)
}

func (e *Env) prepareSecrets() error {
	for _, name := range []string{"hsm-pin", "hsm-so-pin", "admin-token"} {
		if _, err := os.Stat(e.path("secrets", name)); err == nil {
			continue
		}
		secret := string(fsm.GenerateCredential().Secret)
		secret = strings.NewReplacer("/", "", "+", "", "=", "").Replace(secret)
		if err := atomicfile.WriteFile(e.path("secrets", name), []byte(secret+"\n"), 0o600); err != nil {
			return err
		}
	}
	if _, err := os.Stat(e.path("secrets", "gossip-key")); errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		rand.Read(key)
		if err := atomicfile.WriteFile(e.path("secrets", "gossip-key"), []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			return err
		}
	}
	if _, err := os.Stat(e.path("secrets", "cluster-keys")); errors.Is(err, os.ErrNotExist) {
		if err := node.GenerateClusterKeys(e.path("secrets", "cluster-keys")); err != nil {
			return err
		}
	}
	s, err := e.readSecret("credential")
	e.secret = s
	return err
}

func portOf(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// freePortOutside asks the kernel for a free loopback port outside lo..hi,
// the range other tools expect to own next to the API port.
func freePortOutside(lo, hi int, taken map[string]bool) (string, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		ln.Close()
		if p, _ := portOf(addr); (p < lo || p > hi) && !taken[addr] {
			return addr, nil
		}
	}
	return "", errors.New("no free loopback port outside the reserved range")
}

// prepareToken gives node i its own SoftHSMv2 token directory: three nodes,
// three HSMs.
func (e *Env) prepareToken(i int) error {
	conf, err := softhsm.WriteConfig(e.nodeDir(i))
	if err != nil {
		return fmt.Errorf("SoftHSMv2 configuration: %w", err)
	}
	os.Setenv(softhsm.ConfigEnv, conf)
	module, err := softhsm.ModulePath()
	if err != nil {
		return err
	}
	pin, err := e.readSecret("hsm-pin")
	if err != nil {
		return err
	}
	soPIN, err := e.readSecret("hsm-so-pin")
	if err != nil {
		return err
	}
	return softhsm.InitToken(module, e.State.Nodes[i].TokenLabel, soPIN, pin)
}

func (e *Env) readSecret(name string) (string, error) {
	b, err := os.ReadFile(e.path("secrets", name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// NodeConfig is node i's configuration as serve runs it: what
// DIR/nodeN/node.toml holds, with the defaults filled in.
func (e *Env) NodeConfig(i int) (*node.Config, error) {
	c, err := e.nodeSettings(i)
	if err != nil {
		return nil, err
	}
	c.Defaults()
	return c, c.Validate()
}

// nodeSettings is what DIR/nodeN/node.toml says: only the settings dev
// chooses, so that everything else is visibly at its default.
func (e *Env) nodeSettings(i int) (*node.Config, error) {
	module, err := softhsm.ModulePath()
	if err != nil {
		return nil, err
	}
	n := e.State.Nodes[i]
	c := &node.Config{
		DataDir: e.nodeDir(i),
		NodeID:  n.ID,
		API: node.APIConfig{
			Listen:       n.Listen,
			HealthListen: n.HealthListen,
			TLSCertFile:  e.path("tls", "server.pem"),
			TLSKeyFile:   e.path("tls", "server-key.pem"),
			// No load balancer to drain from: Ctrl-C stops at once.
			DrainTime: -time.Second,
		},
		HSM: node.HSMConfig{
			Module:     module,
			TokenLabel: n.TokenLabel,
			PINFile:    e.path("secrets", "hsm-pin"),
			Env:        map[string]string{softhsm.ConfigEnv: e.nodeDir(i, "softhsm2.conf")},
		},
		Cluster: node.ClusterConfig{
			Bind:           n.ClusterBind,
			Bootstrap:      i == 0,
			CAFile:         e.path("tls", "ca.pem"),
			CertFile:       e.nodeDir(i, "cluster.pem"),
			KeyFile:        e.nodeDir(i, "cluster-key.pem"),
			ImportKeysFile: e.nodeDir(i, "cluster-keys.import"),
		},
		Admin:  node.AdminConfig{Listen: n.AdminListen, TokenFile: e.path("secrets", "admin-token")},
		Gossip: node.GossipConfig{Bind: n.GossipBind, KeyringFile: e.path("secrets", "gossip-key")},
	}
	for j, other := range e.State.Nodes {
		if j != i {
			c.Cluster.Join = append(c.Cluster.Join, other.ClusterBind)
			c.Gossip.Join = append(c.Gossip.Join, other.GossipBind)
		}
	}
	if i == 0 {
		c.Bootstrap = node.BootstrapConfig{
			KeyStores: []node.BootstrapKeyStore{{
				Name: e.State.KeyStore, URIPath: e.State.URIPath, Region: e.State.Region, Grants: "open",
				Credentials: []node.BootstrapCredential{{AccessKeyID: e.State.AccessKeyID, SecretFile: e.path("secrets", "credential")}},
			}},
			Keys: []node.BootstrapKey{{KeyStore: e.State.KeyStore, ID: e.State.KeyID, Usage: fsm.DefaultUsage.Names()}},
		}
	}
	return c, nil
}

// stageClusterKeys puts a copy of the ceremony material where node i's
// serve imports it from: serve destroys that copy once its HSM holds the
// keys, as it would in production. dev keeps its own in secrets/, since a
// node added later (--nodes) needs it.
func (e *Env) stageClusterKeys(i int) error {
	b, err := os.ReadFile(e.path("secrets", "cluster-keys"))
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(e.nodeDir(i, "cluster-keys.import"), b, 0o600)
}

// writeNodeConfig writes node i's settings (those at their defaults left
// out, see the README's configuration reference) and reads the file back
// as serve will, so that a setting that does not survive the round trip
// stops dev here rather than the node later.
func (e *Env) writeNodeConfig(i int) error {
	c, err := e.nodeSettings(i)
	if err != nil {
		return err
	}
	path := e.nodeDir(i, "node.toml")
	var b strings.Builder
	b.WriteString("# Written by `xksproxy dev`; `xksproxy serve --config " + path + "` runs this node.\n")
	b.WriteString("# Settings at their defaults are left out (README, Configuration reference).\n")
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return err
	}
	want, err := e.NodeConfig(i)
	if err != nil {
		return err
	}
	got, err := node.LoadConfig(path)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("%s does not read back as written:\n%+v\nwant\n%+v", path, got, want)
	}
	return nil
}
