package node

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/xksapi"
)

// Node is one running proxy: its HSM, its published state and its listeners.
type Node struct {
	HSM    *hsm.HSM
	Views  *fsm.ViewHolder
	API    *xksapi.Server
	log    zerolog.Logger
	apiLn  net.Listener
	hlthLn net.Listener
	errc   chan error
}

// NewLogger builds the process logger from the [log] section.
func NewLogger(c LogConfig, w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("log.level: %w", err)
	}
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// Start opens the HSM, creates bootstrap keys that are missing, publishes the
// state and starts serving. It returns once the listeners are bound.
func Start(cfg *Config, log zerolog.Logger) (*Node, error) {
	for k, v := range cfg.HSM.Env {
		// PKCS#11 modules read their configuration at C_Initialize, from
		// the process environment (SoftHSMv2: SOFTHSM2_CONF).
		os.Setenv(k, v)
	}
	pin, err := cfg.HSM.PIN()
	if err != nil {
		return nil, err
	}
	h, err := hsm.Open(hsm.Config{
		ModulePath:     cfg.HSM.Module,
		TokenLabel:     cfg.HSM.TokenLabel,
		PIN:            pin,
		PoolSize:       cfg.HSM.PoolSize,
		WaitTimeout:    cfg.HSM.WaitTimeout,
		CallTimeout:    cfg.HSM.CallTimeout,
		HealthKeyLabel: cfg.HSM.HealthKeyLabel,
		HealthInterval: cfg.HSM.HealthInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("opening the HSM: %w", err)
	}
	n := &Node{HSM: h, Views: &fsm.ViewHolder{}, log: log, errc: make(chan error, 2)}
	if err := n.start(cfg); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(cfg *Config) error {
	view, err := n.prepareBootstrap(cfg)
	if err != nil {
		return err
	}
	n.Views.Publish(view)
	n.HSM.CheckNow()

	tlsCfg, err := xksapi.TLSConfig{
		CertFile:        cfg.API.TLSCertFile,
		KeyFile:         cfg.API.TLSKeyFile,
		ClientCAFile:    cfg.API.MTLSClientCAFile,
		ClientSubjectCN: cfg.API.MTLSClientSubjectCN,
	}.Build()
	if err != nil {
		return err
	}
	n.API = xksapi.New(xksapi.Config{
		Limits:      xksapi.Limits{MaxPlaintext: cfg.API.MaxPlaintextBytes, MaxAAD: cfg.API.MaxAADBytes},
		MaxInFlight: cfg.API.MaxInFlight,
		NodeID:      cfg.NodeID,
		ReadTimeout: cfg.API.ReadTimeout,
		IdleTimeout: cfg.API.IdleTimeout,
	}, n.Views, n.HSM, n.log)

	n.apiLn, err = net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen: %w", err)
	}
	go func() { n.errc <- n.API.ServeTLS(n.apiLn, tlsCfg) }()
	if cfg.API.HealthListen != "" {
		n.hlthLn, err = net.Listen("tcp", cfg.API.HealthListen)
		if err != nil {
			return fmt.Errorf("api.health_listen: %w", err)
		}
		go func() { n.errc <- n.API.ServeHealth(n.hlthLn) }()
	}
	n.log.Info().Str("api", n.apiLn.Addr().String()).Str("health", n.HealthAddr()).
		Int("keyStores", len(view.Stores())).Msg("serving the XKS API")
	return nil
}

// prepareBootstrap builds the view of the [bootstrap] section, first
// generating the HSM keys it asks to create.
func (n *Node) prepareBootstrap(cfg *Config) (*fsm.View, error) {
	view, err := cfg.BootstrapView()
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	for _, bk := range cfg.Bootstrap.Keys {
		if !bk.Create {
			continue
		}
		ok, err := n.HSM.HasKey(bk.HSMLabel)
		if err != nil {
			return nil, fmt.Errorf("bootstrap key %s: %w", bk.ID, err)
		}
		if !ok {
			if err := n.HSM.GenerateKey(bk.HSMLabel); err != nil {
				return nil, fmt.Errorf("bootstrap key %s: generating %s: %w", bk.ID, bk.HSMLabel, err)
			}
			n.log.Info().Str("keyId", bk.ID).Str("hsmLabel", bk.HSMLabel).Msg("generated bootstrap key in the HSM")
		}
	}
	return view, nil
}

// Reload re-reads the [bootstrap] section of cfg and publishes it, so that
// credentials, keys and enablement change without a restart. Listener, TLS
// and HSM settings take effect only at the next start.
func (n *Node) Reload(cfg *Config) error {
	view, err := n.prepareBootstrap(cfg)
	if err != nil {
		return err
	}
	n.Views.Publish(view)
	n.log.Info().Int("keyStores", len(view.Stores())).Msg("reloaded key stores, credentials and keys")
	return nil
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

// Err delivers a listener's failure.
func (n *Node) Err() <-chan error { return n.errc }

// Close stops serving, waits for requests in progress and closes the HSM.
func (n *Node) Close() error {
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
	errs = append(errs, n.HSM.Close())
	return errors.Join(errs...)
}
