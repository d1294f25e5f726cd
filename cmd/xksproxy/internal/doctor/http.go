package doctor

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/xksclient"
)

// recorder keeps what xksclient does not return: the status and Date
// header of the last answer.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	// status is 0 until an answer arrives.
	status     int
	date       string
	sent, recv time.Time
}

func (t *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := time.Now()
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		t.mu.Lock()
		t.status, t.date, t.sent, t.recv = resp.StatusCode, resp.Header.Get("Date"), sent, time.Now()
		t.mu.Unlock()
	}
	return resp, err
}

func (t *recorder) last() (status int, date string, sent, recv time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status, t.date, t.sent, t.recv
}

// checkHTTP sends GetHealthStatus as KMS does, signed with the credential,
// over connections to the address checked before that must present the
// certificate checked before: the checks after TLS run even when TLS would
// stop KMS, so that one run finds every problem.
func (r *run) checkHTTP(ctx context.Context) {
	cfg := r.tlsConfig()
	leaf := r.leaf
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 || !cs.PeerCertificates[0].Equal(leaf) {
			return errors.New("the server presented another certificate than the one doctor checked")
		}
		return nil
	}
	dialer := &net.Dialer{Timeout: r.o.Timeout}
	rec := &recorder{next: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp4", r.addr)
		},
		TLSClientConfig: cfg,
		MaxConnsPerHost: 1,
	}}
	c := &xksclient.Client{
		Endpoint: r.o.Endpoint,
		URIPath:  r.o.URIPath,
		Creds:    r.o.Creds,
		HTTP:     &http.Client{Timeout: r.o.Timeout, Transport: rec},
		Now:      r.now,
	}
	defer rec.next.(*http.Transport).CloseIdleConnections()

	health, err := c.Health(healthMetadata())
	status, date, sent, recv := rec.last()
	if status == 0 {
		r.noAnswer(err)
		return
	}
	cold := recv.Sub(sent)
	r.checkClock(date, sent, recv)
	if !r.classify(status, health, err) {
		r.checkLatency(cold, 0)
		return
	}
	// Two more on the open connection: the proxy's own time, without the
	// handshakes a fresh connection costs.
	var warm time.Duration
	for range 2 {
		if _, err := c.Health(healthMetadata()); err == nil {
			_, _, s, e := rec.last()
			if d := e.Sub(s); warm == 0 || d < warm {
				warm = d
			}
		}
	}
	r.checkLatency(cold, warm)
}

func healthMetadata() xksclient.RequestMetadata {
	var id [16]byte
	rand.Read(id[:])
	return xksclient.RequestMetadata{KMSOperation: "KmsHealthCheck", KMSRequestID: "xksproxy-doctor-" + hex.EncodeToString(id[:])}
}

// noAnswer reports a GetHealthStatus that got no HTTP answer at all.
func (r *run) noAnswer(err error) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		r.set(CheckLatency, Fail, TimedOut, fmt.Sprintf("no answer to GetHealthStatus within %v (KMS waits %v): %v", r.o.Timeout, kmsTimeout, err),
			"find what holds the proxy up: its logs, its HSM (xksproxy hsm probe), the load balancer")
		r.blocked = "GetHealthStatus timed out"
	default:
		r.set(CheckURIPath, Fail, NotReachable, "GetHealthStatus got no HTTP answer: "+err.Error()+mtlsHint(err),
			"check that the address serves the XKS API over HTTP/1.1 (not another service, nor a load balancer without targets)")
		r.blocked = "GetHealthStatus got no answer"
	}
}

// classify reports the uri-path, credential and health-answer checks from
// GetHealthStatus's answer; it returns whether the answer was a success.
func (r *run) classify(status int, health *xksclient.HealthResponse, err error) bool {
	var xe *xksclient.Error
	isXKS := errors.As(err, &xe)
	url := r.o.Endpoint + r.o.URIPath + "/health"
	if status == http.StatusNotFound {
		detail := fmt.Sprintf("POST %s answered 404", url)
		if isXKS {
			detail += " " + xe.Name
		}
		r.set(CheckURIPath, Fail, InvalidConfiguration, detail+": no key store has this URI path (CreateCustomKeyStore and UpdateCustomKeyStore refuse it with XksProxyUriUnreachableException)",
			"use the key store's uri_path as XksProxyUriPath (xksproxy keystore show KS), or fix the prefix in the endpoint")
		r.blocked = "the URI path matches no key store"
		return false
	}
	if !isXKS && err != nil {
		r.set(CheckURIPath, Pass, "", fmt.Sprintf("POST %s answered HTTP %d", url, status), "")
		r.set(CheckHealth, Fail, InvalidResponse, "GetHealthStatus: "+err.Error()+": KMS cannot interpret the answer",
			"make sure the address reaches the proxy itself; every error must carry the XKS {\"errorName\"} body")
		r.blocked = "GetHealthStatus failed"
		return false
	}
	r.set(CheckURIPath, Pass, "", fmt.Sprintf("POST %s reaches a key store", url), "")
	if isXKS {
		switch xe.Status {
		case http.StatusUnauthorized:
			if r.o.Creds.AccessKeyID == "" {
				r.set(CheckCredential, Skip, "", "no credential given: the proxy refuses the unsigned request ("+xe.Name+")", "")
				break
			}
			r.set(CheckCredential, Fail, InvalidCredentials, fmt.Sprintf("the proxy refused the SigV4 signature of access key id %s: %s", r.o.Creds.AccessKeyID, xe),
				"enter in KMS the access key id and secret of a current credential of this key store (xksproxy credential list KS; credential add KS makes a new one), "+
					"with the region of the key store; check the clocks (clock-skew)")
		case http.StatusForbidden:
			r.set(CheckCredential, Fail, AccessDenied, "the proxy authenticated the request and denied it: "+xe.Error(),
				"GetHealthStatus must not be subject to authorization rules: check the proxy's and any firewall's or load balancer's rules")
		default:
			r.set(CheckCredential, Skip, "", "not confirmed: the proxy answered "+xe.Name, "")
			kmsError, fix := NotReachable, "KMS retries this error; while it lasts the key store cannot connect: see the proxy's logs and its HSMs (xksproxy cluster status)"
			if xe.Status < 429 {
				kmsError, fix = InvalidResponse, "GetHealthStatus must answer 200 to a well-formed request: see the proxy's logs"
			}
			r.set(CheckHealth, Fail, kmsError, "GetHealthStatus answered "+xe.Error(), fix)
		}
		r.blocked = "GetHealthStatus failed"
		return false
	}
	if r.o.Creds.AccessKeyID == "" {
		r.set(CheckCredential, Skip, "", "no credential given", "")
	} else {
		r.set(CheckCredential, Pass, "", fmt.Sprintf("a GetHealthStatus signed with %s (region %s) succeeded", r.o.Creds.AccessKeyID, r.o.Creds.Region), "")
	}
	r.checkHealthAnswer(health)
	return true
}

func (r *run) checkHealthAnswer(h *xksclient.HealthResponse) {
	fixVendor := "the proxy's GetHealthStatus answer breaks the XKS specification: report it to its vendor"
	if h.FleetSize <= 0 || len(h.Fleet) == 0 || len(h.Fleet) > 10 {
		r.set(CheckHealth, Fail, InvalidResponse, fmt.Sprintf("xksProxyFleetSize %d with %d ekmFleetDetails: the specification asks for a fleet size > 0 and 1 to 10 HSMs",
			h.FleetSize, len(h.Fleet)), fixVendor)
		return
	}
	var unavailable, degraded []string
	for _, m := range h.Fleet {
		switch m.HealthStatus {
		case "ACTIVE":
		case "DEGRADED":
			degraded = append(degraded, m.ID)
		case "UNAVAILABLE":
			unavailable = append(unavailable, m.ID)
		default:
			r.set(CheckHealth, Fail, InvalidResponse, fmt.Sprintf("HSM %q has healthStatus %q, not ACTIVE, DEGRADED or UNAVAILABLE", m.ID, m.HealthStatus), fixVendor)
			return
		}
	}
	summary := fmt.Sprintf("%s %s, fleet size %d, %d HSM(s) of %s", h.Vendor, h.Model, h.FleetSize, len(h.Fleet), h.EKMVendor)
	switch {
	case len(unavailable) == len(h.Fleet):
		r.set(CheckHealth, Fail, NotReachable, summary+": every HSM is UNAVAILABLE, and KMS then refuses to connect (CreateCustomKeyStore: XksProxyUriUnreachableException)",
			"bring the HSMs back (xksproxy cluster status shows each node's HSM)")
	case len(unavailable) > 0 || len(degraded) > 0:
		r.set(CheckHealth, Warn, "", fmt.Sprintf("%s: UNAVAILABLE %v, DEGRADED %v", summary, unavailable, degraded),
			"KMS connects, but the named HSMs are down or slow: xksproxy cluster status")
	default:
		r.set(CheckHealth, Pass, "", summary+", all ACTIVE", "")
	}
}

// checkLatency judges the first call (TCP, TLS and the request: what KMS's
// 250 ms cover) and the network round trip (a TCP connect) against AWS's
// 35 ms.
func (r *run) checkLatency(cold, warm time.Duration) {
	detail := fmt.Sprintf("network round trip (TCP connect) %v; GetHealthStatus on a new connection %v", round(r.rtt), round(cold))
	if warm > 0 {
		detail += fmt.Sprintf(", on an open one %v", round(warm))
	}
	switch {
	case cold >= kmsTimeout:
		r.set(CheckLatency, Fail, TimedOut, detail+fmt.Sprintf(": KMS gives up after %v", kmsTimeout),
			"bring the proxy closer to the AWS region (AWS asks for at most 35 ms of network round trip) and find what slows the answer")
	case r.rtt > networkRTTBudget:
		r.set(CheckLatency, Warn, "", detail+fmt.Sprintf(": AWS asks for at most %v of network round trip", networkRTTBudget),
			"run the proxy closer to the AWS region of the key store")
	case cold > kmsTimeout/2:
		r.set(CheckLatency, Warn, "", detail+fmt.Sprintf(": over half of KMS's %v", kmsTimeout),
			"find what slows the answer: the proxy's latency histogram, its HSM (xksproxy hsm probe)")
	default:
		r.set(CheckLatency, Pass, "", detail, "")
	}
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// checkClock compares the proxy's Date header with this machine's clock
// halfway through the call (the header has whole seconds).
func (r *run) checkClock(date string, sent, recv time.Time) {
	if date == "" {
		r.set(CheckClockSkew, Warn, "", "the proxy sends no Date header: its clock cannot be compared", "check the proxy host's time synchronisation (chrony, systemd-timesyncd)")
		return
	}
	theirs, err := http.ParseTime(date)
	if err != nil {
		r.set(CheckClockSkew, Warn, "", fmt.Sprintf("the Date header %q does not parse: %v", date, err), "")
		return
	}
	mid := sent.Add(recv.Sub(sent) / 2)
	if r.o.Now != nil {
		mid = r.o.Now()
	}
	skew := theirs.Sub(mid.Truncate(time.Second))
	abs := skew
	if abs < 0 {
		abs = -abs
	}
	detail := "the proxy's clock agrees with this machine's to the second (its Date header)"
	if abs >= time.Second {
		direction := "ahead of"
		if skew < 0 {
			direction = "behind"
		}
		detail = fmt.Sprintf("the proxy's clock is %v %s this machine's (its Date header)", abs.Round(time.Second), direction)
	}
	switch {
	case abs > maxClockSkew:
		r.set(CheckClockSkew, Fail, InvalidCredentials, detail+": SigV4 refuses a signature more than 5 minutes off, so the proxy refuses KMS's",
			"synchronise the clocks (NTP) of the proxy hosts and of this machine")
	case abs > time.Minute:
		r.set(CheckClockSkew, Warn, "", detail+": under SigV4's 5 minutes, but drifting", "synchronise the clocks (NTP)")
	default:
		r.set(CheckClockSkew, Pass, "", detail, "")
	}
}
