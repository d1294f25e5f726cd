package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/bench/xksclient"
)

// maxResponseBytes bounds what the bench reads of one answer; XKS answers
// are at most a few kilobytes.
const maxResponseBytes = 64 << 10

// endpoint is one node of the target with its own bounded connection pool.
//
// It uses net/http: at the rates one bench process can offer on the machines
// we measure on (tens of thousands per second at most, sharing the cores
// with the proxy), its client costs a few microseconds per request, well
// under the SigV4 signing and JSON work, and it is the standard library.
// Ceilings beyond that are measured with wrk, as the issue prescribes.
type endpoint struct {
	base      string // https://host:port
	host      string // host:port, as signed and as sent in the Host header
	client    *http.Client
	transport *http.Transport
}

func newEndpoints(t Target, connections int) ([]*endpoint, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", t.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	var eps []*endpoint
	for _, e := range t.Endpoints {
		u, err := url.Parse(e)
		if err != nil {
			return nil, err
		}
		cfg := tlsConfig.Clone()
		// Resumed handshakes when a connection is replaced, as a real
		// client would do.
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(connections)
		tr := &http.Transport{
			TLSClientConfig: cfg,
			DialContext:     (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			// At most `connections` requests on the wire to this node; the
			// others wait for a connection, and that wait is part of their
			// latency, as it would be for a client with this pool.
			MaxConnsPerHost:     connections,
			MaxIdleConnsPerHost: connections,
			MaxIdleConns:        connections,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 5 * time.Second,
			DisableCompression:  true,
			// HTTP/1.1 only, as the XKS specification requires and AWS KMS
			// speaks: one request per connection at a time.
			ForceAttemptHTTP2: false,
			TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		}
		eps = append(eps, &endpoint{
			base: strings.TrimSuffix(e, "/"), host: u.Host,
			client: &http.Client{Transport: tr}, transport: tr,
		})
	}
	return eps, nil
}

// post signs body with a fresh X-Amz-Date and sends it to path; it returns
// the status and the (bounded) answer.
func (e *endpoint) post(ctx context.Context, creds xksclient.Credentials, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	amzDate, auth := creds.Sign(e.host, path, body, time.Now())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("Authorization", auth)
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, data, nil
}

// classifyTransport names a failure to get an answer at all.
func classifyTransport(err error) failure {
	name := "other"
	var netErr net.Error
	var certErr *tls.CertificateVerificationError
	var recordErr tls.RecordHeaderError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		name = "timeout"
	case errors.Is(err, context.Canceled):
		name = "cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		name = "connection-refused"
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		name = "connection-reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		name = "connection-closed"
	case errors.As(err, &certErr) || errors.As(err, &recordErr) || strings.Contains(err.Error(), "tls:"):
		name = "tls"
	}
	return failure{kind: kindTransport, name: name, message: clip(err.Error())}
}

// clip keeps a message short and printable for the reports.
func clip(s string) string {
	const maxLen = 200
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) > maxLen {
		return string(b[:maxLen]) + "..."
	}
	return string(b)
}
