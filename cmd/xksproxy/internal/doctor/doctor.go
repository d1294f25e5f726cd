// Package doctor is `xksproxy doctor`: from the operator's side, the checks
// AWS KMS makes when it connects an external key store (ConnectCustomKeyStore)
// and on every call after, each failure named with the connection error code
// KMS would report for it (DescribeCustomKeyStores' ConnectionErrorCode) and
// the fix. It speaks to the proxy only through the network, as KMS does, and
// signs with xksclient's signer, not with the server's code.
package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/xksclient"
)

// Status is a check's outcome.
type Status string

// The outcomes: only Fail makes doctor exit 1; Skip is a check that could
// not run because an earlier one failed (or an input is missing).
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
)

// The connection error codes AWS KMS reports for an external key store
// (ConnectionErrorCode), as its documentation spells them.
const (
	InvalidTLSConfiguration = "XKS_PROXY_INVALID_TLS_CONFIGURATION"
	InvalidConfiguration    = "XKS_PROXY_INVALID_CONFIGURATION"
	InvalidCredentials      = "INVALID_CREDENTIALS"
	TimedOut                = "XKS_PROXY_TIMED_OUT"
	NotReachable            = "XKS_PROXY_NOT_REACHABLE"
	InvalidResponse         = "XKS_PROXY_INVALID_RESPONSE"
	AccessDenied            = "XKS_PROXY_ACCESS_DENIED"
)

// The checks, in the order they run and are reported. The names are part
// of --json's contract (README, Operations).
const (
	CheckEndpoint    = "endpoint"
	CheckPort        = "port"
	CheckIPv4        = "ipv4"
	CheckTLSVersion  = "tls-version"
	CheckChain       = "certificate-chain"
	CheckValidity    = "certificate-validity"
	CheckName        = "certificate-name"
	CheckTrustedRoot = "trusted-root"
	CheckURIPath     = "uri-path"
	CheckCredential  = "credential"
	CheckHealth      = "health-answer"
	CheckLatency     = "latency"
	CheckClockSkew   = "clock-skew"
)

var checkOrder = []string{CheckEndpoint, CheckPort, CheckIPv4, CheckTLSVersion, CheckChain, CheckValidity, CheckName,
	CheckTrustedRoot, CheckURIPath, CheckCredential, CheckHealth, CheckLatency, CheckClockSkew}

// What AWS asks of an endpoint.
const (
	kmsTimeout       = 250 * time.Millisecond // KMS gives up on a call after this, connection included
	networkRTTBudget = 35 * time.Millisecond  // the network round trip AWS asks for
	maxClockSkew     = 5 * time.Minute        // SigV4's limit: KMS's signatures are refused beyond it
	expiryWarning    = 10 * 24 * time.Hour    // AWS's recommended alarm on XksProxyCertificateDaysToExpire
)

// Check is one line of the report.
type Check struct {
	Name     string `json:"name"`
	Status   Status `json:"status"`
	KMSError string `json:"kmsError,omitempty"` // the ConnectionErrorCode KMS would report; only with fail or warn
	Detail   string `json:"detail"`
	Fix      string `json:"fix,omitempty"`
}

// Report is doctor's answer: every check, in checkOrder.
type Report struct {
	Endpoint     string  `json:"endpoint"`
	URIPath      string  `json:"uriPath"`
	Address      string  `json:"address,omitempty"` // the IPv4 address and port checked
	TrustedRoots string  `json:"trustedRoots"`      // the list the trusted-root check used
	Checks       []Check `json:"checks"`
	Failed       int     `json:"failed"`
	Warnings     int     `json:"warnings"`
}

// Options say what to check and with what.
type Options struct {
	Endpoint string // https://host[:port]
	URIPath  string // [/prefix]/kms/xks/v1
	Creds    xksclient.Credentials
	// CAFile holds PEM certificates doctor trusts besides the system's roots
	// (a private CA for testing); the ones that are not self-signed are only
	// used to name an intermediate the server leaves out.
	CAFile       string
	TrustedRoots *TrustedRoots // nil: AWSTrustedRoots
	// ClientCert is presented when the proxy asks for one (mTLS): KMS
	// presents cks.kms.<region>.amazonaws.com.
	ClientCert *tls.Certificate
	Timeout    time.Duration // each network step; 0 means 5 s
	Now        func() time.Time
}

type run struct {
	o       Options
	now     func() time.Time
	checks  map[string]Check
	blocked string // why the remaining checks are skipped
	host    string
	port    string
	addr    string
	rtt     time.Duration
	leaf    *x509.Certificate
}

func (r *run) set(name string, s Status, kmsError, detail, fix string) {
	r.checks[name] = Check{Name: name, Status: s, KMSError: kmsError, Detail: detail, Fix: fix}
}

// Run checks o's endpoint. It never returns an error: every problem is a
// check in the report.
func Run(ctx context.Context, o Options) *Report {
	if o.TrustedRoots == nil {
		o.TrustedRoots = AWSTrustedRoots()
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	r := &run{o: o, now: o.Now, checks: map[string]Check{}}
	if r.now == nil {
		r.now = time.Now
	}
	if r.checkEndpoint() && r.checkIPv4(ctx) {
		if state, ok := r.checkTLS(ctx); ok {
			r.checkCertificates(state)
			r.checkHTTP(ctx)
		}
	}
	rep := &Report{Endpoint: o.Endpoint, URIPath: o.URIPath, Address: r.addr,
		TrustedRoots: fmt.Sprintf("%s (%d roots)", o.TrustedRoots.Source, o.TrustedRoots.Len())}
	for _, name := range checkOrder {
		c, ok := r.checks[name]
		if !ok {
			c = Check{Name: name, Status: Skip, Detail: "not checked: " + r.blocked}
		}
		switch c.Status {
		case Fail:
			rep.Failed++
		case Warn:
			rep.Warnings++
		}
		rep.Checks = append(rep.Checks, c)
	}
	return rep
}

// uriPathSyntax is XksProxyUriPath as KMS accepts it.
var uriPathSyntax = regexp.MustCompile(`^(/[a-zA-Z0-9/_-]+)?/kms/xks/v1$`)

func (r *run) checkEndpoint() bool {
	u, err := url.Parse(r.o.Endpoint)
	switch {
	case err != nil:
		r.set(CheckEndpoint, Fail, "", err.Error(), "give the endpoint as https://host[:port][/prefix]")
	case u.Scheme != "https" || u.Hostname() == "":
		r.set(CheckEndpoint, Fail, "", fmt.Sprintf("%q is not an https://host URL: KMS only calls its proxy over HTTPS", r.o.Endpoint),
			"give the endpoint as https://host[:port][/prefix]")
	case len(r.o.URIPath) > 128 || !uriPathSyntax.MatchString(r.o.URIPath):
		r.set(CheckEndpoint, Fail, "", fmt.Sprintf("URI path %q is not [/prefix]/kms/xks/v1 of at most 128 characters a-z A-Z 0-9 / - _: "+
			"CreateCustomKeyStore refuses it", r.o.URIPath), "use the key store's uri_path (xksproxy keystore show)")
	default:
		r.host, r.port = u.Hostname(), u.Port()
		if r.port == "" {
			r.port = "443"
		}
		r.set(CheckEndpoint, Pass, "", fmt.Sprintf("XksProxyUriEndpoint https://%s, XksProxyUriPath %s", u.Host, r.o.URIPath), "")
		if r.port == "443" {
			r.set(CheckPort, Pass, "", "port 443", "")
		} else {
			r.set(CheckPort, Warn, "", fmt.Sprintf("port %s: KMS calls its proxy on port 443 only", r.port),
				fmt.Sprintf("serve on 443, or put a load balancer or port forward on 443 in front of port %s, and check that address", r.port))
		}
		return true
	}
	r.blocked = "the endpoint is not usable"
	return false
}

// checkIPv4 resolves the host to an IPv4 address, as KMS connects over IPv4
// only, and measures the network round trip as the best of three TCP
// connects.
func (r *run) checkIPv4(ctx context.Context) bool {
	fix := "publish an A record for the host and make the proxy reachable on it from the internet (or the VPC endpoint service)"
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip4", r.host)
	if err != nil || len(ips) == 0 {
		r.set(CheckIPv4, Fail, NotReachable, fmt.Sprintf("%s has no IPv4 address (KMS connects over IPv4): %v", r.host, err), fix)
		r.blocked = "no IPv4 address"
		return false
	}
	r.addr = net.JoinHostPort(ips[0].String(), r.port)
	d := net.Dialer{Timeout: r.o.Timeout}
	for range 3 {
		start := time.Now()
		c, err := d.DialContext(ctx, "tcp4", r.addr)
		if err != nil {
			r.set(CheckIPv4, Fail, NotReachable, fmt.Sprintf("no TCP connection to %s: %v", r.addr, err),
				"start the proxy, open the port in firewalls and security groups, and check the address "+r.host+" resolves to")
			r.blocked = "the proxy is not reachable"
			return false
		}
		c.Close()
		if took := time.Since(start); r.rtt == 0 || took < r.rtt {
			r.rtt = took
		}
	}
	r.set(CheckIPv4, Pass, "", fmt.Sprintf("%s resolves to %s and accepts TCP connections", r.host, r.addr), "")
	return true
}

// kmsTLS12Suites are the TLS 1.2 cipher suites of the XKS specification;
// doctor offers no other, so a proxy that only has others fails here as
// it would with KMS. (TLS 1.3's suites are not configurable in Go; every
// TLS 1.3 server has one of the specification's two.)
var kmsTLS12Suites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}

func (r *run) tlsConfig() *tls.Config {
	cfg := &tls.Config{
		ServerName: r.host,
		// doctor verifies the certificates itself, check by check, to say
		// which part KMS would refuse; the later HTTP checks pin the
		// certificate seen here.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
		MaxVersion:         tls.VersionTLS13,
		CipherSuites:       kmsTLS12Suites,
		NextProtos:         []string{"http/1.1"},
	}
	if r.o.ClientCert != nil {
		cfg.Certificates = []tls.Certificate{*r.o.ClientCert}
	}
	return cfg
}

func (r *run) checkTLS(ctx context.Context) (tls.ConnectionState, bool) {
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: r.tlsConfig()}
	c, err := d.DialContext(ctx, "tcp4", r.addr)
	if err != nil {
		r.set(CheckTLSVersion, Fail, InvalidTLSConfiguration, "the TLS handshake failed: "+err.Error()+mtlsHint(err),
			"serve TLS 1.2 or 1.3; for TLS 1.2, ECDHE-ECDSA-AES256-GCM-SHA384 or ECDHE-RSA-AES256-GCM-SHA384 (the XKS specification's suites)")
		r.blocked = "no TLS connection"
		return tls.ConnectionState{}, false
	}
	defer c.Close()
	state := c.(*tls.Conn).ConnectionState()
	r.set(CheckTLSVersion, Pass, "", fmt.Sprintf("%s, %s", tls.VersionName(state.Version), tls.CipherSuiteName(state.CipherSuite)), "")
	r.leaf = state.PeerCertificates[0]
	return state, true
}

// mtlsHint explains a handshake the server ended because doctor had no
// client certificate.
func mtlsHint(err error) string {
	if s := err.Error(); strings.Contains(s, "certificate required") || strings.Contains(s, "bad certificate") {
		return " (the proxy asks for a client certificate: mutual TLS. KMS presents its own, for cks.kms.<region>.amazonaws.com; " +
			"give doctor one the proxy accepts with --client-cert and --client-key)"
	}
	return ""
}
