// Package node builds one proxy node from its TOML configuration: the HSM,
// the state the data plane reads, and the listeners.
package node

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/cluster"
	"github.com/xksproxy/xksproxy/fsm"
)

// Config is one node's TOML file. State that every node shares (key stores,
// credentials, keys) does not belong here except as a one-time [bootstrap].
type Config struct {
	DataDir   string          `toml:"data_dir,omitempty"`
	NodeID    string          `toml:"node_id,omitempty"`
	API       APIConfig       `toml:"api,omitempty"`
	HSM       HSMConfig       `toml:"hsm,omitempty"`
	Cluster   ClusterConfig   `toml:"cluster,omitempty"`
	Gossip    GossipConfig    `toml:"gossip,omitempty"`
	Admin     AdminConfig     `toml:"admin,omitempty"`
	Log       LogConfig       `toml:"log,omitempty"`
	Bootstrap BootstrapConfig `toml:"bootstrap,omitempty"`
}

// ClusterConfig places the node in its Raft cluster. A single node is a
// cluster of one that bootstraps itself.
type ClusterConfig struct {
	Bind           string        `toml:"bind,omitempty"`
	Advertise      string        `toml:"advertise,omitempty"`
	Bootstrap      bool          `toml:"bootstrap,omitempty"`
	Join           []string      `toml:"join,omitempty"`
	CAFile         string        `toml:"ca_file,omitempty"`
	CertFile       string        `toml:"cert_file,omitempty"`
	KeyFile        string        `toml:"key_file,omitempty"`
	StalenessLimit time.Duration `toml:"staleness_limit,omitzero"`
	MaxLag         time.Duration `toml:"max_lag,omitzero"`
	// ImportKeysFile, when set, imports the cluster key ceremony material at
	// start if the HSM lacks the cluster keys, then overwrites and removes
	// the file (also when the keys were there already). For development;
	// production imports once with `xksproxy cluster-keys import` and
	// destroys the file.
	ImportKeysFile string `toml:"import_keys_file,omitempty"`
}

// GossipConfig turns on the memberlist fleet: discovery by --join, fleet
// health in GetHealthStatus, and voters managed by the leader.
type GossipConfig struct {
	Bind            string        `toml:"bind,omitempty"`
	Advertise       string        `toml:"advertise,omitempty"`
	Join            []string      `toml:"join,omitempty"`
	KeyringFile     string        `toml:"keyring_file,omitempty"`
	BootstrapExpect int           `toml:"bootstrap_expect,omitzero"`
	DeadTimeout     time.Duration `toml:"dead_timeout,omitzero"`
}

// Keyring reads the gossip keys: one base64 AES key (16, 24 or 32 bytes)
// per line, the first being the one used to encrypt.
func (g *GossipConfig) Keyring() ([][]byte, error) {
	b, err := os.ReadFile(g.KeyringFile)
	if err != nil {
		return nil, fmt.Errorf("gossip.keyring_file: %w", err)
	}
	var keys [][]byte
	for _, line := range strings.Fields(string(b)) {
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return nil, fmt.Errorf("gossip.keyring_file %s: every line must be a base64 AES key of 16, 24 or 32 bytes", g.KeyringFile)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip.keyring_file %s holds no key", g.KeyringFile)
	}
	return keys, nil
}

// AdminConfig is the operator API's listener.
type AdminConfig struct {
	Listen    string `toml:"listen,omitempty"`
	TokenFile string `toml:"token_file,omitempty"` // the bootstrap operator's token (role admin)
	// ClientCAFile is the admin client CA, which issues operator
	// certificates (URI SAN xksproxy-operator://NAME?role=ROLE). It must not
	// be the cluster CA; empty: no client certificate authenticates.
	ClientCAFile string `toml:"client_ca_file,omitempty"`
}

type APIConfig struct {
	Listen              string        `toml:"listen,omitempty"`
	HealthListen        string        `toml:"health_listen,omitempty"`
	TLSCertFile         string        `toml:"tls_cert_file,omitempty"`
	TLSKeyFile          string        `toml:"tls_key_file,omitempty"`
	MTLSClientCAFile    string        `toml:"mtls_client_ca_file,omitempty"`
	MTLSClientSubjectCN string        `toml:"mtls_client_subject_cn,omitempty"`
	MaxInFlight         int           `toml:"max_in_flight,omitzero"`
	MaxConns            int           `toml:"max_conns,omitzero"`
	MaxConnsPerIP       int           `toml:"max_conns_per_ip,omitzero"`
	OverloadWait        time.Duration `toml:"overload_wait,omitzero"`
	ReadTimeout         time.Duration `toml:"read_timeout,omitzero"`
	IdleTimeout         time.Duration `toml:"idle_timeout,omitzero"`
	DrainTime           time.Duration `toml:"drain_time,omitzero"`
	MaxPlaintextBytes   int           `toml:"max_plaintext_bytes,omitzero"`
	MaxAADBytes         int           `toml:"max_aad_bytes,omitzero"`
}

type HSMConfig struct {
	Module         string            `toml:"module,omitempty"`
	TokenLabel     string            `toml:"token_label,omitempty"`
	PINFile        string            `toml:"pin_file,omitempty"`
	PINEnv         string            `toml:"pin_env,omitempty"`
	PoolSize       int               `toml:"pool_size,omitzero"`
	WaitTimeout    time.Duration     `toml:"wait_timeout,omitzero"`
	CallTimeout    time.Duration     `toml:"call_timeout,omitzero"`
	HealthKeyLabel string            `toml:"health_key_label,omitempty"`
	HealthInterval time.Duration     `toml:"health_interval,omitzero"`
	Env            map[string]string `toml:"env,omitempty"`
	// More are the node's further HSMs, from the second entry of an
	// [[hsm]] array of tables on (see hsmlist.go).
	More []HSMConfig `toml:"-"`
}

type LogConfig struct {
	Level         string        `toml:"level,omitempty"`
	Format        string        `toml:"format,omitempty"`
	FlushInterval time.Duration `toml:"flush_interval,omitzero"`
	// UnauthenticatedLinesPerSecond bounds the lines about callers that
	// have not authenticated; negative: none.
	UnauthenticatedLinesPerSecond float64 `toml:"unauthenticated_lines_per_second,omitzero"`
}

// BootstrapConfig seeds key stores and keys when the node starts.
type BootstrapConfig struct {
	KeyStores []BootstrapKeyStore `toml:"key_stores,omitempty"`
	Keys      []BootstrapKey      `toml:"keys,omitempty"`
}

type BootstrapKeyStore struct {
	Name        string                `toml:"name,omitempty"`
	URIPath     string                `toml:"uri_path,omitempty"`
	Region      string                `toml:"region,omitempty"`
	Disabled    bool                  `toml:"disabled,omitempty"`
	Grants      string                `toml:"grants,omitempty"`   // "closed" (default) or "open"
	KeyMode     string                `toml:"key_mode,omitempty"` // "replicated" (default) or "shared"
	Credentials []BootstrapCredential `toml:"credentials,omitempty"`
}

// BootstrapCredential names where a secret lives; secrets never sit in the
// configuration file itself.
type BootstrapCredential struct {
	AccessKeyID string    `toml:"access_key_id,omitempty"`
	SecretFile  string    `toml:"secret_file,omitempty"`
	SecretEnv   string    `toml:"secret_env,omitempty"`
	Expires     time.Time `toml:"expires,omitempty"`
}

// BootstrapKey is a key of the seed. In a replicated key store its material
// is generated; in a shared one HSMLabel names the object every HSM holds.
type BootstrapKey struct {
	KeyStore string   `toml:"key_store,omitempty"`
	ID       string   `toml:"id,omitempty"`
	HSMLabel string   `toml:"hsm_label,omitempty"`
	Usage    []string `toml:"usage,omitempty"`
	Disabled bool     `toml:"disabled,omitempty"`
}

// Defaults fills every unset field with its documented default.
func (c *Config) Defaults() {
	if c.API.Listen == "" {
		c.API.Listen = "127.0.0.1:8443"
	}
	for _, h := range c.HSMs() {
		if h.Module == "" {
			h.Module = "/usr/lib/softhsm/libsofthsm2.so"
		}
		if h.PINEnv == "" && h.PINFile == "" {
			h.PINEnv = "XKSPROXY_HSM_PIN"
		}
	}
	if c.Cluster.Bind == "" {
		c.Cluster.Bind = "127.0.0.1:7000"
	}
	if c.Cluster.StalenessLimit == 0 {
		c.Cluster.StalenessLimit = 2 * time.Minute
	}
	if c.Cluster.MaxLag == 0 {
		c.Cluster.MaxLag = cluster.DefaultMaxLag
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = "127.0.0.1:7100"
	}
	for i := range c.Bootstrap.KeyStores {
		ks := &c.Bootstrap.KeyStores[i]
		if ks.Grants == "" {
			ks.Grants = "closed"
		}
		if ks.KeyMode == "" {
			ks.KeyMode = "replicated"
		}
	}
	if c.API.MaxConns == 0 {
		c.API.MaxConns = 16384
	}
	if c.API.MaxConnsPerIP == 0 {
		c.API.MaxConnsPerIP = 1024
	}
	if c.Log.UnauthenticatedLinesPerSecond == 0 {
		c.Log.UnauthenticatedLinesPerSecond = 10
	}
	if c.API.DrainTime == 0 {
		c.API.DrainTime = 10 * time.Second
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.FlushInterval == 0 {
		c.Log.FlushInterval = 100 * time.Millisecond
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	if c.NodeID == "" {
		if h, err := os.Hostname(); err == nil {
			c.NodeID = h
		}
	}
	for i := range c.Bootstrap.Keys {
		if len(c.Bootstrap.Keys[i].Usage) == 0 {
			c.Bootstrap.Keys[i].Usage = fsm.DefaultUsage.Names()
		}
	}
}

// Validate checks what Defaults cannot supply.
func (c *Config) Validate() error {
	var problems []string
	if c.API.TLSCertFile == "" || c.API.TLSKeyFile == "" {
		problems = append(problems, "api.tls_cert_file and api.tls_key_file are required")
	}
	if (c.API.MTLSClientCAFile == "") != (c.API.MTLSClientSubjectCN == "") {
		problems = append(problems, "api.mtls_client_ca_file and api.mtls_client_subject_cn go together: mutual TLS needs both the CA and the subject common name (cks.kms.<region>.amazonaws.com)")
	}
	if c.API.MTLSClientCAFile != "" && c.API.HealthListen == "" {
		problems = append(problems, "api.health_listen is required with mTLS: a load balancer cannot present AWS's client certificate")
	}
	if c.API.MaxConns > 0 && c.API.MaxConnsPerIP > c.API.MaxConns {
		problems = append(problems, fmt.Sprintf("api.max_conns_per_ip (%d) is above api.max_conns (%d), so it would never apply", c.API.MaxConnsPerIP, c.API.MaxConns))
	}
	if r := c.Log.UnauthenticatedLinesPerSecond; math.IsNaN(r) || math.IsInf(r, 0) {
		problems = append(problems, "log.unauthenticated_lines_per_second must be a number (negative: log none)")
	}
	for i, h := range c.HSMs() {
		if h.TokenLabel == "" {
			problems = append(problems, fmt.Sprintf("hsm.token_label is required (HSM %d)", i+1))
		}
	}
	if c.DataDir == "" {
		problems = append(problems, "data_dir is required (Raft keeps its log and snapshots there)")
	}
	if c.Cluster.CAFile == "" || c.Cluster.CertFile == "" || c.Cluster.KeyFile == "" {
		problems = append(problems, "cluster.ca_file, cluster.cert_file and cluster.key_file are required (node-to-node mutual TLS)")
	}
	if c.Cluster.StalenessLimit < 0 {
		problems = append(problems, "cluster.staleness_limit must not be negative (use a huge value to never go stale)")
	}
	if c.Cluster.MaxLag < 0 {
		problems = append(problems, "cluster.max_lag must not be negative")
	}
	if c.Admin.ClientCAFile != "" && c.Admin.ClientCAFile == c.Cluster.CAFile {
		problems = append(problems, "admin.client_ca_file must not be cluster.ca_file: node certificates are not operators")
	}
	if c.Admin.TokenFile == "" {
		problems = append(problems, "admin.token_file is required")
	}
	if c.Gossip.Bind != "" && c.Gossip.KeyringFile == "" {
		problems = append(problems, "gossip.keyring_file is required: gossip is always encrypted")
	}
	if c.Gossip.BootstrapExpect > 0 && c.Cluster.Bootstrap {
		problems = append(problems, "use either cluster.bootstrap or gossip.bootstrap_expect, not both")
	}
	if _, err := zerolog.ParseLevel(c.Log.Level); err != nil || c.Log.Level == "" {
		problems = append(problems, fmt.Sprintf("log.level %q is not one of trace, debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		problems = append(problems, "log.format must be json or console")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// ExposedSecretFiles lists the configured files holding secrets (the HSM
// PIN, the admin token, SigV4 secrets, private keys, the gossip keyring,
// the key ceremony material) that users other than the owner may read,
// each as "setting path (mode)".
func (c *Config) ExposedSecretFiles() []string {
	type secretFile struct{ setting, path string }
	files := []secretFile{
		{"hsm.pin_file", c.HSM.PINFile},
		{"admin.token_file", c.Admin.TokenFile},
		{"api.tls_key_file", c.API.TLSKeyFile},
		{"cluster.key_file", c.Cluster.KeyFile},
		{"cluster.import_keys_file", c.Cluster.ImportKeysFile},
		{"gossip.keyring_file", c.Gossip.KeyringFile},
	}
	for _, h := range c.HSM.More {
		files = append(files, secretFile{"hsm.pin_file", h.PINFile})
	}
	for _, ks := range c.Bootstrap.KeyStores {
		for _, cr := range ks.Credentials {
			files = append(files, secretFile{"bootstrap credential " + cr.AccessKeyID + " secret_file", cr.SecretFile})
		}
	}
	var exposed []string
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(f.path); err == nil && st.Mode().Perm()&0o077 != 0 {
			exposed = append(exposed, fmt.Sprintf("%s %s (%#o)", f.setting, f.path, st.Mode().Perm()))
		}
	}
	return exposed
}

// LoadConfig reads a TOML file strictly: an unknown key is an error, because
// a misspelt setting silently ignored is worse than a refusal to start.
func LoadConfig(path string) (*Config, error) {
	var c Config
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("%s: unknown settings: %s", path, strings.Join(keys, ", "))
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// PIN reads the HSM user PIN from its file or environment variable.
func (h *HSMConfig) PIN() (string, error) {
	if h.PINFile != "" {
		b, err := os.ReadFile(h.PINFile)
		if err != nil {
			return "", fmt.Errorf("reading hsm.pin_file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	pin := os.Getenv(h.PINEnv)
	if pin == "" {
		return "", fmt.Errorf("the HSM PIN is not set: put it in hsm.pin_file or the %s environment variable", h.PINEnv)
	}
	return pin, nil
}

func (b *BootstrapCredential) secret() ([]byte, error) {
	switch {
	case b.SecretFile != "":
		s, err := os.ReadFile(b.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("credential %s: %w", b.AccessKeyID, err)
		}
		return []byte(strings.TrimSpace(string(s))), nil
	case b.SecretEnv != "":
		s := os.Getenv(b.SecretEnv)
		if s == "" {
			return nil, fmt.Errorf("credential %s: environment variable %s is empty", b.AccessKeyID, b.SecretEnv)
		}
		return []byte(s), nil
	}
	return nil, fmt.Errorf("credential %s: set secret_file or secret_env", b.AccessKeyID)
}

// SeedSpec turns the [bootstrap] section into the cluster's one-time seed.
func (c *Config) SeedSpec() (*cluster.SeedSpec, error) {
	if len(c.Bootstrap.KeyStores) == 0 && len(c.Bootstrap.Keys) == 0 {
		return nil, nil
	}
	spec := &cluster.SeedSpec{}
	for _, bks := range c.Bootstrap.KeyStores {
		ks := cluster.SeedKeyStore{Name: bks.Name, URIPath: bks.URIPath, Region: bks.Region, Disabled: bks.Disabled,
			GrantsMode: fsm.GrantsMode(bks.Grants), KeyMode: fsm.KeyMode(bks.KeyMode)}
		for _, bc := range bks.Credentials {
			secret, err := bc.secret()
			if err != nil {
				return nil, fmt.Errorf("key store %s: %w", bks.Name, err)
			}
			ks.Credentials = append(ks.Credentials, cluster.SeedCredential{AccessKeyID: bc.AccessKeyID, Secret: secret, ExpiresAt: bc.Expires})
		}
		spec.KeyStores = append(spec.KeyStores, ks)
	}
	for _, bk := range c.Bootstrap.Keys {
		usage, err := fsm.ParseUsage(bk.Usage)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", bk.ID, err)
		}
		spec.Keys = append(spec.Keys, cluster.SeedKey{KeyStore: bk.KeyStore, ID: bk.ID, Usage: usage, Disabled: bk.Disabled, HSMLabel: bk.HSMLabel})
	}
	return spec, nil
}
