package node

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/admin/server"
	"github.com/xksproxy/xksproxy/cluster"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/internal/buildinfo"
	"github.com/xksproxy/xksproxy/xksapi"
)

// Node is one running proxy: its HSM, its cluster membership, the state the
// data plane reads, and its listeners.
type Node struct {
	HSM       *hsm.Group
	Cluster   *cluster.Node
	Views     *fsm.ViewHolder
	API       *xksapi.Server
	AdminAddr net.Addr
	admin     *server.Server
	cfg       *Config // as running: a reload updates what it applied
	apiTLS    swappableTLS
	log       zerolog.Logger
	apiLn     net.Listener
	hlthLn    net.Listener
	errc      chan error
	// closing ends the node's background checks (warnCapacity).
	closing chan struct{}
}

// timeFormat is the log lines' "time": RFC 3339 with milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// NewLogger builds the process logger from the [log] section, writing to w
// in batches unless flush_interval is negative. Close the returned closer
// last: it writes what is waiting.
func NewLogger(c LogConfig, w io.Writer) (zerolog.Logger, io.Closer, error) {
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		return zerolog.Nop(), nil, fmt.Errorf("log.level: %w", err)
	}
	// The level is zerolog's global one, which every logger of the process
	// honours, so that a reload (SIGHUP) can change it.
	zerolog.SetGlobalLevel(level)
	var closer io.Closer = nopCloser{}
	if c.FlushInterval > 0 {
		b := newBatchWriter(w, c.FlushInterval)
		w, closer = b, b
	}
	// Milliseconds: at 1,800 requests/s whole seconds order nothing. A
	// package variable in zerolog; this process has one log format.
	zerolog.TimeFieldFormat = timeFormat
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: timeFormat}
	}
	return zerolog.New(w).With().Timestamp().Logger(), closer, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// OpenHSM opens the node's HSMs ([hsm], or each of [[hsm]]) as one group:
// for each, it sets the module's environment, reads the PIN and opens the
// token.
func OpenHSM(cfg *Config) (*hsm.Group, error) {
	var members []*hsm.HSM
	fail := func(err error) (*hsm.Group, error) {
		for _, m := range members {
			m.Close()
		}
		return nil, err
	}
	for i, hc := range cfg.HSMs() {
		for k, v := range hc.Env {
			// PKCS#11 modules read their configuration at C_Initialize, from
			// the process environment (SoftHSMv2: SOFTHSM2_CONF). It is one
			// environment: modules of several HSMs must not need different
			// values of one variable.
			os.Setenv(k, v)
		}
		pin, err := hc.PIN()
		if err != nil {
			return fail(err)
		}
		h, err := hsm.Open(hsm.Config{
			ModulePath:     hc.Module,
			TokenLabel:     hc.TokenLabel,
			PIN:            pin,
			PoolSize:       hc.PoolSize,
			WaitTimeout:    hc.WaitTimeout,
			CallTimeout:    hc.CallTimeout,
			HealthKeyLabel: hc.HealthKeyLabel,
			HealthInterval: hc.HealthInterval,
		})
		if err != nil {
			return fail(fmt.Errorf("opening HSM %d (token %q): %w", i+1, hc.TokenLabel, err))
		}
		members = append(members, h)
	}
	g, err := hsm.NewGroup(members...)
	if err != nil {
		return fail(err)
	}
	return g, nil
}

// Start opens the HSM, joins or forms the cluster, and serves the XKS API
// and the admin API. It returns once the listeners are bound; /ready turns
// true when the node has caught up with the cluster.
func Start(cfg *Config, log zerolog.Logger) (*Node, error) {
	// The API's certificates are checked before anything leaves a trace:
	// a node that formed a cluster and then failed on its TLS files would
	// leave Raft state behind.
	tlsCfg, err := apiTLS(cfg.API)
	if err != nil {
		return nil, err
	}
	for _, f := range cfg.ExposedSecretFiles() {
		log.Warn().Str("file", f).Msg("a secret file is readable by other users than its owner: chmod 0600 it")
	}
	now, err := faultClock(log)
	if err != nil {
		return nil, err
	}
	// Before raft starts, so that its first state changes are counted.
	bridgeRaftMetrics()
	// The cluster would only retry a seed it refuses, forever.
	seed, err := cfg.SeedSpec()
	if err == nil && seed != nil {
		err = seed.Check()
	}
	if err != nil {
		return nil, fmt.Errorf("[bootstrap]: %w", err)
	}
	h, err := OpenHSM(cfg)
	if err != nil {
		return nil, err
	}
	running := *cfg
	n := &Node{HSM: h, Views: &fsm.ViewHolder{}, cfg: &running, log: log, errc: make(chan error, 4), closing: make(chan struct{})}
	n.apiTLS.current.Store(tlsCfg)
	if err := n.start(cfg, seed, now); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// start wires the node; now is its clock for decisions (nil: time.Now).
func (n *Node) start(cfg *Config, seed *cluster.SeedSpec, now func() time.Time) error {
	if cfg.Cluster.ImportKeysFile != "" {
		destroyed, err := importClusterKeysFile(n.HSM, cfg.Cluster.ImportKeysFile)
		if err != nil {
			return fmt.Errorf("cluster.import_keys_file: %w", err)
		}
		if destroyed {
			n.log.Warn().Str("file", cfg.Cluster.ImportKeysFile).Msg("the HSM holds the cluster keys: overwrote and removed cluster.import_keys_file (nodes added later need the ceremony material again)")
		}
	}
	if ok, err := n.HSM.HasClusterKeys(); err != nil || !ok {
		n.log.Warn().Err(err).Msg("the cluster keys are not in this HSM: replicated keys cannot be unwrapped and secrets cannot be unsealed until `xksproxy cluster-keys import` is run")
	}
	token, err := readAdminToken(cfg)
	if err != nil {
		return err
	}
	n.HSM.CheckNow()
	go n.warnCapacity()

	n.apiLn, err = net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen: %w", err)
	}
	var gossip *cluster.GossipConfig
	if cfg.Gossip.Bind != "" {
		keyring, err := cfg.Gossip.Keyring()
		if err != nil {
			return err
		}
		gossip = &cluster.GossipConfig{BindAddr: cfg.Gossip.Bind, Advertise: cfg.Gossip.Advertise, Join: cfg.Gossip.Join, Keyring: keyring}
	}
	n.Cluster, err = cluster.Start(cluster.Config{
		NodeID:          cfg.NodeID,
		DataDir:         cfg.DataDir,
		Bind:            cfg.Cluster.Bind,
		Advertise:       cfg.Cluster.Advertise,
		APIAddr:         n.apiLn.Addr().String(),
		TLS:             cluster.TLSFiles{CAFile: cfg.Cluster.CAFile, CertFile: cfg.Cluster.CertFile, KeyFile: cfg.Cluster.KeyFile},
		Bootstrap:       cfg.Cluster.Bootstrap,
		Join:            cfg.Cluster.Join,
		StalenessLimit:  cfg.Cluster.StalenessLimit,
		MaxLag:          cfg.Cluster.MaxLag,
		Version:         buildinfo.Read().String(),
		Seed:            seed,
		Gossip:          gossip,
		BootstrapExpect: cfg.Gossip.BootstrapExpect,
		DeadTimeout:     cfg.Gossip.DeadTimeout,
		OnListenerError: n.listenerFailed,
		Now:             now,
	}, n.HSM, n.Views, n.log)
	if err != nil {
		return err
	}
	n.admin, err = server.Serve(n.Cluster, server.Config{Listen: cfg.Admin.Listen, Token: token,
		ClientCAFile: cfg.Admin.ClientCAFile, OnError: n.listenerFailed}, n.log)
	if err != nil {
		return err
	}
	n.AdminAddr = n.admin.Addr()

	reg := newRegistry(n.HSM, n.Cluster, n.admin)
	reg.MustRegister(prometheus.CollectorFunc(n.collectOps), prometheus.CollectorFunc(bridgeRaftMetrics().Collect))
	n.API = xksapi.New(xksapi.Config{
		Limits:                 xksapi.Limits{MaxPlaintext: cfg.API.MaxPlaintextBytes, MaxAAD: cfg.API.MaxAADBytes},
		MaxInFlight:            cfg.API.MaxInFlight,
		OverloadWait:           cfg.API.OverloadWait,
		NodeID:                 cfg.NodeID,
		ReadTimeout:            cfg.API.ReadTimeout,
		IdleTimeout:            cfg.API.IdleTimeout,
		MaxConns:               cfg.API.MaxConns,
		MaxConnsPerIP:          cfg.API.MaxConnsPerIP,
		UnauthenticatedLogRate: cfg.Log.UnauthenticatedLinesPerSecond,
		Ready:                  n.Cluster.ServingError,
		Degraded:               func() bool { return len(n.Cluster.KeysMissing()) > 0 },
		Fleet:                  n.fleet,
		Metrics:                reg,
		Now:                    now,
	}, n.Views, n.HSM, n.log)
	go func() { n.errc <- n.API.ServeTLS(n.apiLn, n.apiTLS.listenerConfig()) }()
	if cfg.API.HealthListen != "" {
		n.hlthLn, err = net.Listen("tcp", cfg.API.HealthListen)
		if err != nil {
			return fmt.Errorf("api.health_listen: %w", err)
		}
		go func() { n.errc <- n.API.ServeHealth(n.hlthLn) }()
	}
	n.log.Info().Str("node", cfg.NodeID).Str("api", n.apiLn.Addr().String()).Str("health", n.HealthAddr()).
		Str("cluster", n.Cluster.ClusterAddr()).Str("admin", n.AdminAddr.String()).Msg("serving")
	return nil
}

// readAdminToken reads admin.token_file; the admin server refuses a token
// under 16 characters, and so does a configuration check.
func readAdminToken(cfg *Config) (string, error) {
	b, err := os.ReadFile(cfg.Admin.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 16 {
		return "", fmt.Errorf("admin.token_file %s: the admin token must be at least 16 characters", cfg.Admin.TokenFile)
	}
	return token, nil
}

// importClusterKeysFile imports the ceremony material at path into h,
// unless the cluster keys are there already, and then destroys the file:
// with a copy of raft.db or of a backup, it unseals every SigV4 secret and
// unwraps every replicated key, so it must not outlive its use. It reports
// whether there was a file to destroy; a file it cannot destroy is an
// error, so that the node does not run beside it.
func importClusterKeysFile(h clusterKeyHolder, path string) (bool, error) {
	err := retryBusyHSM(func() error {
		ok, err := h.HasClusterKeys()
		if err != nil {
			return fmt.Errorf("checking for the cluster keys: %w", err)
		}
		if ok {
			return nil
		}
		return ImportClusterKeys(h, path)
	})
	if err != nil {
		return false, err
	}
	destroyed, err := destroyFile(path)
	if err != nil {
		return false, fmt.Errorf("the HSM holds the cluster keys, but %s, which holds them in the clear, could not be destroyed: %w; remove it by hand", path, err)
	}
	return destroyed, nil
}

// retryBusyHSM calls f again, for up to 10 s, while the HSM answers that it
// was busy or that the call outlived its deadline: SoftHSMv2 writing token
// files on a loaded machine can take longer than the call deadline, and
// hsm's answer to that is to ask again (the import is idempotent).
func retryBusyHSM(f func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if !errors.Is(err, hsm.ErrTimeout) && !errors.Is(err, hsm.ErrBusy) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// destroyFile overwrites a file with zeros, flushes it and removes it. On
// flash or copy-on-write file systems the old blocks may survive the
// overwrite; the removal is what is certain.
func destroyFile(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	st, err := f.Stat()
	if err == nil {
		_, err = f.Write(make([]byte, st.Size()))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	return true, os.Remove(path)
}

// clusterKeyHolder is an HSM, or every HSM of a node (*hsm.Group).
type clusterKeyHolder interface {
	HasClusterKeys() (bool, error)
	ImportClusterKeys(material []byte) error
}

// ImportClusterKeys imports the key ceremony material of path into h.
func ImportClusterKeys(h clusterKeyHolder, path string) error {
	material, err := ReadClusterKeys(path)
	if err != nil {
		return err
	}
	if err := h.ImportClusterKeys(material); err != nil {
		return fmt.Errorf("importing the cluster keys: %w", err)
	}
	return nil
}

// fleet adapts the cluster's gossip view to GetHealthStatus.
func (n *Node) fleet() (int, []xksapi.FleetMember) {
	size, others := n.Cluster.Fleet()
	out := make([]xksapi.FleetMember, len(others))
	for i, m := range others {
		out[i] = xksapi.FleetMember{ID: m.ID, Model: m.HSMModel, Status: m.Status}
	}
	return size, out
}

// APIAddr is the bound address of the XKS listener.
func (n *Node) APIAddr() string { return n.apiLn.Addr().String() }

// HealthAddr is the bound address of the plain-HTTP health listener, or "".
func (n *Node) HealthAddr() string {
	if n.hlthLn == nil {
		return ""
	}
	return n.hlthLn.Addr().String()
}

// Err delivers a listener's failure: the XKS, health, admin or cluster RPC
// listener's.
func (n *Node) Err() <-chan error { return n.errc }

// listenerFailed passes on the admin or cluster RPC listener's failure. The
// first failure stops the process; later ones find the channel full and
// are dropped instead of blocking the listener's goroutine.
func (n *Node) listenerFailed(err error) {
	select {
	case n.errc <- err:
	default:
	}
}

// Close stops serving, leaves the cluster data for a restart, and closes the HSM.
func (n *Node) Close() error {
	select {
	case <-n.closing:
	default:
		close(n.closing)
	}
	var errs []error
	if n.API != nil {
		errs = append(errs, n.API.Shutdown())
	} else {
		for _, ln := range []net.Listener{n.apiLn, n.hlthLn} {
			if ln != nil {
				ln.Close()
			}
		}
	}
	if n.admin != nil {
		n.admin.Close()
	}
	if n.Cluster != nil {
		errs = append(errs, n.Cluster.Close())
	}
	errs = append(errs, n.HSM.Close())
	return errors.Join(errs...)
}
