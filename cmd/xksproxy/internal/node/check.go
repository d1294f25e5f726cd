package node

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/cluster"
)

// CheckResult is one preflight check of `serve --check`.
type CheckResult struct {
	Name   string
	Detail string // what was found, on success
	Err    error
}

// Check runs, without serving and without touching the node's state,
// every check Start makes before it serves: the configuration (LoadConfig
// did), the XKS listener's TLS files and mTLS CA, the cluster's TLS files
// (also the admin listener's), the admin token, the gossip keyring, the
// bootstrap seed and its secrets, the listen addresses, the data directory,
// and an HSM login with the configured PIN. It binds no port, so it can
// check a changed file beside the running node before a reload or restart.
func Check(cfg *Config) []CheckResult {
	var out []CheckResult
	add := func(name string, detail string, err error) {
		out = append(out, CheckResult{Name: name, Detail: detail, Err: err})
	}
	t, err := apiTLS(cfg.API)
	detail := ""
	if err == nil {
		detail = describeCert(t.Certificates[0].Leaf)
		if cfg.API.MTLSClientCAFile != "" {
			detail += "; mTLS client " + cfg.API.MTLSClientSubjectCN
		}
	}
	add("api TLS", detail, err)
	err = cluster.TLSFiles{CAFile: cfg.Cluster.CAFile, CertFile: cfg.Cluster.CertFile, KeyFile: cfg.Cluster.KeyFile}.Check(cfg.NodeID)
	add("cluster and admin TLS", "", err)
	_, err = readAdminToken(cfg)
	add("admin token", "", err)
	if cfg.Gossip.Bind != "" {
		keys, err := cfg.Gossip.Keyring()
		add("gossip keyring", fmt.Sprintf("%d key(s)", len(keys)), err)
	}
	seed, err := cfg.SeedSpec()
	if err == nil && seed != nil {
		err = seed.Check()
	}
	if seed != nil || err != nil {
		add("bootstrap seed", "", err)
	}
	add("listen addresses", "", checkAddresses(cfg))
	add("data_dir", "", checkDataDir(cfg.DataDir))
	if _, err := faultClock(zerolog.Nop()); err != nil {
		add("environment", "", err)
	}
	detail, err = checkHSM(cfg)
	add("HSM login", detail, err)
	return out
}

func describeCert(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	names := c.DNSNames
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return fmt.Sprintf("%s, expires %s (in %d days)", strings.Join(names, ","), c.NotAfter.UTC().Format(time.DateOnly),
		int(time.Until(c.NotAfter).Hours()/24))
}

func checkAddresses(cfg *Config) error {
	var errs []error
	for _, a := range []struct{ setting, addr string }{
		{"api.listen", cfg.API.Listen}, {"api.health_listen", cfg.API.HealthListen}, {"cluster.bind", cfg.Cluster.Bind},
		{"cluster.advertise", cfg.Cluster.Advertise}, {"admin.listen", cfg.Admin.Listen}, {"gossip.bind", cfg.Gossip.Bind},
	} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.setting, a.addr, err))
		}
	}
	return errors.Join(errs...)
}

// checkDataDir makes sure the node could create its Raft files: the
// directory, or its nearest existing parent, takes a new file.
func checkDataDir(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if errors.Is(err, os.ErrNotExist) && d != filepath.Dir(d) {
			continue
		}
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", d)
		}
		f, err := os.CreateTemp(d, ".xksproxy-check-*")
		if err != nil {
			return fmt.Errorf("data_dir %s: cannot write in %s: %w", dir, d, err)
		}
		f.Close()
		return os.Remove(f.Name())
	}
}

// checkHSM logs in to the token as serve would, looks for the cluster
// keys (serve starts without them, with a warning), then logs out.
func checkHSM(cfg *Config) (string, error) {
	h, err := OpenHSM(cfg)
	if err != nil {
		return "", err
	}
	var labels []string
	for _, hc := range cfg.HSMs() {
		labels = append(labels, hc.TokenLabel)
	}
	tokens := "token " + labels[0]
	if len(labels) > 1 {
		tokens = "tokens " + strings.Join(labels, ", ")
	}
	detail := tokens + ", cluster keys present"
	switch ok, err := h.HasClusterKeys(); {
	case err != nil:
		detail = tokens + ", cluster keys not checked: " + err.Error()
	case !ok && cfg.Cluster.ImportKeysFile != "":
		detail = tokens + ", cluster keys to be imported from cluster.import_keys_file at start"
	case !ok && len(labels) > 1:
		detail = tokens + ", WITHOUT the cluster keys in every one (import them: xksproxy cluster-keys import)"
	case !ok:
		detail = tokens + ", WITHOUT the cluster keys (import them: xksproxy cluster-keys import)"
	}
	return detail, h.Close()
}
