package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/bench"
)

// options are the flags of run and find-max.
type options struct {
	client, uriPath, accessKeyID, secretFile, region, ca string
	endpoints, keyIDs, hooks                             []string

	keys                      int
	rate                      float64
	mix                       string
	plaintext, aad            int
	cdiv                      onOff
	warmup, duration, timeout time.Duration
	budget                    time.Duration
	maxRequests               int64
	connections, maxInFlight  int
	preconnect                bool
	spread, principal, out    string
	cpuProfile                string
	maxErrorRate              float64
	ringSize                  int
	quiet                     bool
}

func newOptions() *options {
	d := bench.DefaultConfig()
	return &options{
		rate: d.RatePerKey, mix: d.Mix.String(), plaintext: d.PlaintextBytes, aad: d.AADBytes,
		warmup: d.Warmup, duration: d.Duration, timeout: d.Timeout, budget: d.Budget,
		connections: d.Connections, preconnect: d.Preconnect, maxInFlight: d.MaxInFlight, spread: string(d.Spread),
		principal: d.Principal, maxErrorRate: d.MaxErrorRate, ringSize: d.RingSize,
	}
}

func (o *options) bind(cmd *cobra.Command, run bool) {
	f := cmd.Flags()
	f.StringVar(&o.client, "client", "", "client.json written by 'xksproxy dev' (endpoints, URI path, credential, region, CA, key); other flags override it")
	f.StringArrayVar(&o.endpoints, "endpoint", nil, "https://host:port of a proxy node (repeat for several)")
	f.StringVar(&o.uriPath, "uri-path", "", "the key store's URI path, [/prefix]/kms/xks/v1")
	f.StringVar(&o.accessKeyID, "access-key-id", "", "SigV4 access key id")
	f.StringVar(&o.secretFile, "secret-file", "", "file holding the SigV4 secret access key (else $"+bench.SecretEnv+", else --client)")
	f.StringVar(&o.region, "region", "", "SigV4 region of the key store")
	f.StringVar(&o.ca, "ca", "", "PEM CA certificate of the proxy's TLS certificate (default: the system roots)")
	f.StringArrayVar(&o.keyIDs, "key", nil, "external key id to use (repeat for several)")
	f.IntVar(&o.keys, "keys", 0, "logical keys, each with its own schedule at the per-key rate; more than the key ids given reuses them (default: one per key id)")
	f.StringVar(&o.mix, "mix", o.mix, "operation weights: encrypt, decrypt, metadata, health")
	f.IntVar(&o.plaintext, "plaintext-size", o.plaintext, "plaintext bytes per encrypt (1..4300)")
	f.IntVar(&o.aad, "aad-size", o.aad, "additional authenticated data bytes per encrypt (0..8192)")
	f.Var(&o.cdiv, "cdiv", "on: ask for the ciphertextDataIntegrityValue and verify it")
	f.DurationVar(&o.warmup, "warmup", o.warmup, "load before measuring (connections, caches), not counted")
	maxRequests := "cap on the requests of each step, warm-up included; shortens the step to fit (0: rate × keys × time)"
	if run {
		// find-max sets the rate itself (--start-rate, --max-rate).
		f.Float64Var(&o.rate, "rate", o.rate, "requests per second per key (open loop: sent on schedule whatever the answers do)")
		f.DurationVar(&o.duration, "duration", o.duration, "measured time")
		f.StringArrayVar(&o.hooks, "at", nil, "scenario hook TIME=COMMAND: run COMMAND with sh at TIME into the measured run (repeatable)")
		maxRequests = "cap on the requests of the whole run, warm-up included; shortens the measured time to fit (0: rate × keys × time)"
	}
	f.Int64Var(&o.maxRequests, "max-requests", 0, maxRequests)
	f.IntVar(&o.connections, "connections", o.connections, "keep-alive connections per endpoint")
	f.BoolVar(&o.preconnect, "preconnect", o.preconnect, "open every connection before the run, so TLS handshakes are not measured; false opens them as the load needs them")
	f.StringVar(&o.spread, "spread", o.spread, "round-robin (each key's requests rotate over the endpoints) or per-node (each key pinned to one)")
	f.IntVar(&o.maxInFlight, "max-in-flight", o.maxInFlight, "requests outstanding at once; beyond it they count as client-saturated errors")
	f.DurationVar(&o.timeout, "timeout", o.timeout, "per-request timeout")
	f.DurationVar(&o.budget, "budget", o.budget, "latency budget: PASS needs p99 within it (AWS KMS times out at 250ms)")
	f.Float64Var(&o.maxErrorRate, "max-error-rate", o.maxErrorRate, "error fraction a PASS tolerates (0.001 = 0.1%)")
	f.IntVar(&o.ringSize, "ring-size", o.ringSize, "recent ciphertexts kept per key for decrypts")
	f.StringVar(&o.principal, "principal", o.principal, "requestMetadata.awsPrincipalArn sent")
	f.StringVar(&o.out, "out", "", "directory for the reports (default bench/results/<timestamp>)")
	f.BoolVar(&o.quiet, "quiet", false, "no live progress line on stderr")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write the bench's own CPU profile (pprof) to this file, to see what generating the load costs")
}

// config builds the bench configuration: client.json first, flags over it.
func (o *options) config() (bench.Config, error) {
	cfg := bench.DefaultConfig()
	if o.client != "" {
		t, err := bench.LoadClientFile(o.client)
		if err != nil {
			return cfg, err
		}
		cfg.Target = t
	}
	t := &cfg.Target
	if len(o.endpoints) > 0 {
		t.Endpoints = o.endpoints
	}
	if len(o.keyIDs) > 0 {
		t.KeyIDs = o.keyIDs
	}
	for _, s := range []struct {
		flag string
		dst  *string
	}{{o.uriPath, &t.URIPath}, {o.accessKeyID, &t.AccessKeyID}, {o.region, &t.Region}, {o.ca, &t.CAFile}} {
		if s.flag != "" {
			*s.dst = s.flag
		}
	}
	switch {
	case o.secretFile != "":
		b, err := os.ReadFile(o.secretFile)
		if err != nil {
			return cfg, err
		}
		t.Secret = bench.Secret(strings.TrimSpace(string(b)))
	case os.Getenv(bench.SecretEnv) != "":
		t.Secret = bench.Secret(os.Getenv(bench.SecretEnv))
	}
	mix, err := bench.ParseMix(o.mix)
	if err != nil {
		return cfg, err
	}
	for _, h := range o.hooks {
		hook, err := bench.ParseHook(h)
		if err != nil {
			return cfg, err
		}
		cfg.Hooks = append(cfg.Hooks, hook)
	}
	cfg.Keys, cfg.RatePerKey, cfg.Mix = o.keys, o.rate, mix
	cfg.PlaintextBytes, cfg.AADBytes, cfg.CDIV = o.plaintext, o.aad, bool(o.cdiv)
	cfg.Warmup, cfg.Duration, cfg.MaxRequests = o.warmup, o.duration, o.maxRequests
	cfg.Connections, cfg.Preconnect, cfg.Spread, cfg.MaxInFlight = o.connections, o.preconnect, bench.Spread(o.spread), o.maxInFlight
	cfg.Timeout, cfg.Budget, cfg.MaxErrorRate = o.timeout, o.budget, o.maxErrorRate
	cfg.RingSize, cfg.Principal = o.ringSize, o.principal
	if !o.quiet {
		cfg.Progress = os.Stderr
	}
	return cfg, nil
}

// onOff is a boolean flag that reads on/off as well as true/false.
type onOff bool

func (b *onOff) String() string {
	if *b {
		return "on"
	}
	return "off"
}

func (b *onOff) Set(s string) error {
	switch strings.ToLower(s) {
	case "on", "true", "yes", "1":
		*b = true
	case "off", "false", "no", "0":
		*b = false
	default:
		return fmt.Errorf("%q is neither on nor off", s)
	}
	return nil
}

func (b *onOff) Type() string { return "on|off" }
