package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/xksapi"
)

// swappableTLS gives each handshake the TLS configuration last loaded, so
// that a reload changes what new connections get while the connections
// already open keep the certificate they were made with.
type swappableTLS struct{ current atomic.Pointer[tls.Config] }

func (s *swappableTLS) listenerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load(), nil
		},
	}
}

// apiTLS builds the XKS listener's TLS from the [api] files: certificate,
// key, and the mTLS client CA with its subject.
func apiTLS(c APIConfig) (*tls.Config, error) {
	cfg, err := xksapi.TLSConfig{
		CertFile:        c.TLSCertFile,
		KeyFile:         c.TLSKeyFile,
		ClientCAFile:    c.MTLSClientCAFile,
		ClientSubjectCN: c.MTLSClientSubjectCN,
	}.Build()
	if err != nil {
		return nil, fmt.Errorf("api TLS (tls_cert_file, tls_key_file, mtls_client_ca_file): %w", err)
	}
	return cfg, nil
}

// Reload is what SIGHUP does: it reads the configuration file at path again
// and applies, without dropping a connection, the XKS listener's
// certificate, key and mTLS client CA (and subject), the admin listener's
// certificate (the cluster certificate, key and CA files), and log.level.
// Whatever fails to load is refused with a log line and the current one
// stays; a file that does not parse changes nothing. Other changed
// settings are named in a warning: they take effect at the next start.
// The error says what was refused; the node serves on either way.
func (n *Node) Reload(path string) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		n.log.Error().Err(err).Msg("reload refused: the configuration does not load; nothing changed")
		return err
	}
	var reloaded []string
	var errs []error
	if t, err := apiTLS(cfg.API); err != nil {
		n.log.Error().Err(err).Msg("reload: keeping the current XKS listener certificate and client CA")
		errs = append(errs, err)
	} else {
		n.apiTLS.current.Store(t)
		reloaded = append(reloaded, "api_tls")
		n.cfg.API.TLSCertFile, n.cfg.API.TLSKeyFile = cfg.API.TLSCertFile, cfg.API.TLSKeyFile
		n.cfg.API.MTLSClientCAFile, n.cfg.API.MTLSClientSubjectCN = cfg.API.MTLSClientCAFile, cfg.API.MTLSClientSubjectCN
	}
	if err := n.admin.ReloadTLS(); err != nil {
		n.log.Error().Err(err).Msg("reload: keeping the current admin listener certificate")
		errs = append(errs, err)
	} else {
		reloaded = append(reloaded, "admin_tls")
	}
	level, _ := zerolog.ParseLevel(cfg.Log.Level) // LoadConfig validated it
	if level != zerolog.GlobalLevel() {
		n.log.Info().Str("from", zerolog.GlobalLevel().String()).Str("to", level.String()).Msg("reload: log level")
	}
	zerolog.SetGlobalLevel(level)
	n.cfg.Log.Level = cfg.Log.Level
	reloaded = append(reloaded, "log_level")
	ev := n.log.Info()
	if len(errs) > 0 {
		ev = n.log.Warn()
	}
	ev.Strs("reloaded", reloaded).Int("refused", len(errs)).Str("config", path).Msg("reloaded on SIGHUP")
	if changed := changedSections(n.cfg, cfg); len(changed) > 0 {
		n.log.Warn().Strs("sections", changed).Msg("reload: these settings changed in the file and take effect at the next start only")
	}
	return errors.Join(errs...)
}

// changedSections names the top-level settings and sections of the file
// that differ from the running ones in what a reload does not apply (a
// reloadable setting the reload refused has its own error line).
func changedSections(running, file *Config) []string {
	r := *running
	r.API.TLSCertFile, r.API.TLSKeyFile = file.API.TLSCertFile, file.API.TLSKeyFile
	r.API.MTLSClientCAFile, r.API.MTLSClientSubjectCN = file.API.MTLSClientCAFile, file.API.MTLSClientSubjectCN
	r.Log.Level = file.Log.Level
	var out []string
	rv, fv := reflect.ValueOf(r), reflect.ValueOf(*file)
	for i := range rv.NumField() {
		if !reflect.DeepEqual(rv.Field(i).Interface(), fv.Field(i).Interface()) {
			name, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("toml"), ",")
			out = append(out, name)
		}
	}
	return out
}
