package doctor

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/xksclient"
)

// pki is a two-level chain made for one test: root → intermediate → leaf.
type pki struct {
	root, intermediate *x509.Certificate
	rootKey, interKey  *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{}
	long := func(tmpl *x509.Certificate) {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-10*365*24*time.Hour), time.Now().Add(10*365*24*time.Hour)
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
	}
	rootTmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "doctor test root"}}
	long(rootTmpl)
	p.root, p.rootKey = issue(t, rootTmpl, nil, nil)
	interTmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "doctor test intermediate"}}
	long(interTmpl)
	p.intermediate, p.interKey = issue(t, interTmpl, p.root, p.rootKey)
	return p
}

func issue(t *testing.T, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// leaf issues a server certificate from the intermediate for names, valid
// from notBefore to notAfter.
func (p *pki) leaf(t *testing.T, names []string, notBefore, notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return issue(t, tmpl, p.intermediate, p.interKey)
}

func writePEM(t *testing.T, certs ...*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	path := filepath.Join(t.TempDir(), "certs.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveTLS runs an HTTPS server on loopback that presents chain with key
// and answers every POST with a well-formed GetHealthStatus answer: the
// TLS setup is the fault these tests inject, and what follows the
// handshake is tested against a real node (cmd/xksproxy's doctor test).
// It returns the server's port.
func serveTLS(t *testing.T, cfg *tls.Config, key *ecdsa.PrivateKey, chain ...*x509.Certificate) string {
	t.Helper()
	return serveTLSWith(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(healthyAnswer))
	}), key, chain...)
}

const healthyAnswer = `{"xksProxyFleetSize":1,"xksProxyVendor":"test","xksProxyModel":"test 1","ekmVendor":"test",` +
	`"ekmFleetDetails":[{"id":"hsm1","model":"test","healthStatus":"ACTIVE"}]}`

func serveTLSWith(t *testing.T, cfg *tls.Config, handler http.Handler, key *ecdsa.PrivateKey, chain ...*x509.Certificate) string {
	t.Helper()
	cert := tls.Certificate{PrivateKey: key}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	cfg.Certificates = []tls.Certificate{cert}
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func fingerprintList(t *testing.T, c *x509.Certificate) *TrustedRoots {
	t.Helper()
	sum := sha256.Sum256(c.Raw)
	roots, err := ParseTrustedRoots([]byte("test\t"+hex.EncodeToString(sum[:])+"\tCN=test\n"), "the test's list")
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

var testCreds = xksclient.Credentials{AccessKeyID: "AKIDDOCTORTESTAAAAAAAA", Secret: strings.Repeat("s", 43), Region: "us-east-1"}

func check(t *testing.T, rep *Report, name string) Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("the report has no check %q", name)
	return Check{}
}

// expectOnlyFailure asserts that the report fails exactly the named check,
// with kmsError, and logs the report.
func expectOnlyFailure(t *testing.T, rep *Report, name, kmsError string) {
	t.Helper()
	for _, c := range rep.Checks {
		t.Logf("%-5s %-21s %s %s", c.Status, c.Name, c.KMSError, c.Detail)
	}
	if c := check(t, rep, name); c.Status != Fail || c.KMSError != kmsError || c.Fix == "" {
		t.Errorf("%s: got %s %q (fix %q), want fail %s with a fix", name, c.Status, c.KMSError, c.Fix, kmsError)
	}
	for _, c := range rep.Checks {
		if c.Status == Fail && c.Name != name {
			t.Errorf("%s fails too: %s", c.Name, c.Detail)
		}
	}
	if rep.Failed != 1 {
		t.Errorf("failed = %d, want 1", rep.Failed)
	}
}

func TestTLSSetups(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	goodLeaf, goodKey := p.leaf(t, []string{"localhost", "127.0.0.1"}, now.Add(-time.Hour), now.Add(90*24*time.Hour))
	rootFile := writePEM(t, p.root)
	opts := func(port string) Options {
		return Options{Endpoint: "https://localhost:" + port, URIPath: "/doctor/kms/xks/v1", Creds: testCreds,
			CAFile: rootFile, TrustedRoots: fingerprintList(t, p.root), Timeout: 5 * time.Second}
	}
	ctx := context.Background()

	t.Run("good", func(t *testing.T) {
		rep := Run(ctx, opts(serveTLS(t, &tls.Config{}, goodKey, goodLeaf, p.intermediate)))
		for _, c := range rep.Checks {
			t.Logf("%-5s %-21s %s", c.Status, c.Name, c.Detail)
			want := Pass
			if c.Name == CheckPort {
				want = Warn
			}
			if c.Status != want {
				t.Errorf("%s: %s (%s), want %s", c.Name, c.Status, c.Detail, want)
			}
		}
	})
	t.Run("expired", func(t *testing.T) {
		leaf, key := p.leaf(t, []string{"localhost"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
		rep := Run(ctx, opts(serveTLS(t, &tls.Config{}, key, leaf, p.intermediate)))
		expectOnlyFailure(t, rep, CheckValidity, InvalidTLSConfiguration)
	})
	t.Run("wrong name", func(t *testing.T) {
		leaf, key := p.leaf(t, []string{"xks.other.example"}, now.Add(-time.Hour), now.Add(90*24*time.Hour))
		rep := Run(ctx, opts(serveTLS(t, &tls.Config{}, key, leaf, p.intermediate)))
		expectOnlyFailure(t, rep, CheckName, InvalidTLSConfiguration)
		if d := check(t, rep, CheckName).Detail; !strings.Contains(d, "xks.other.example") {
			t.Errorf("the detail does not say which name the certificate has: %s", d)
		}
	})
	t.Run("missing intermediate", func(t *testing.T) {
		port := serveTLS(t, &tls.Config{}, goodKey, goodLeaf) // the leaf alone
		o := opts(port)
		o.CAFile = writePEM(t, p.root, p.intermediate) // an operator's CA bundle names the intermediate
		rep := Run(ctx, o)
		expectOnlyFailure(t, rep, CheckChain, InvalidTLSConfiguration)
		if d := check(t, rep, CheckChain).Detail; !strings.Contains(d, "leaves out the intermediate CN=doctor test intermediate") {
			t.Errorf("the detail does not name the missing intermediate: %s", d)
		}
		// Knowing only the root, doctor still names the chain.
		rep = Run(ctx, opts(port))
		if c := check(t, rep, CheckChain); c.Status != Fail || c.KMSError != InvalidTLSConfiguration || !strings.Contains(c.Detail, "intermediate certificate is missing") {
			t.Errorf("leaf alone, root known: %+v", c)
		}
	})
	t.Run("untrusted root", func(t *testing.T) {
		o := opts(serveTLS(t, &tls.Config{}, goodKey, goodLeaf, p.intermediate))
		o.TrustedRoots = nil // AWS's list
		rep := Run(ctx, o)
		expectOnlyFailure(t, rep, CheckTrustedRoot, InvalidTLSConfiguration)
		if d := check(t, rep, CheckTrustedRoot).Detail; !strings.Contains(d, "private CA") || !strings.Contains(d, "KMS refuses it") {
			t.Errorf("the detail does not say what a private CA means for KMS: %s", d)
		}
		// Without --ca the root is unknown to doctor: both the chain and the root fail with KMS's name.
		o.CAFile = ""
		rep = Run(ctx, o)
		for _, name := range []string{CheckChain, CheckTrustedRoot} {
			if c := check(t, rep, name); c.Status != Fail || c.KMSError != InvalidTLSConfiguration {
				t.Errorf("root not given: %+v", c)
			}
		}
	})
	t.Run("root sent, unknown to the system", func(t *testing.T) {
		o := opts(serveTLS(t, &tls.Config{}, goodKey, goodLeaf, p.intermediate, p.root))
		o.CAFile = ""
		rep := Run(ctx, o) // the test's list holds the root: it is matched by fingerprint
		if rep.Failed != 0 || check(t, rep, CheckTrustedRoot).Status != Pass {
			t.Errorf("%d failed: %+v", rep.Failed, rep.Checks)
		}
		o.TrustedRoots = nil
		expectOnlyFailure(t, Run(ctx, o), CheckTrustedRoot, InvalidTLSConfiguration)
	})
	t.Run("TLS 1.1", func(t *testing.T) {
		rep := Run(ctx, opts(serveTLS(t, &tls.Config{MaxVersion: tls.VersionTLS11}, goodKey, goodLeaf, p.intermediate)))
		expectOnlyFailure(t, rep, CheckTLSVersion, InvalidTLSConfiguration)
	})
	t.Run("TLS 1.2 without the specification's suites", func(t *testing.T) {
		cfg := &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
		rep := Run(ctx, opts(serveTLS(t, cfg, goodKey, goodLeaf, p.intermediate)))
		expectOnlyFailure(t, rep, CheckTLSVersion, InvalidTLSConfiguration)
	})
	t.Run("mutual TLS", func(t *testing.T) {
		clientCAs := x509.NewCertPool()
		clientCAs.AddCert(p.root)
		port := serveTLS(t, &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs}, goodKey, goodLeaf, p.intermediate)
		rep := Run(ctx, opts(port))
		failed := false
		for _, c := range rep.Checks {
			if c.Status == Fail {
				failed = true
				if !strings.Contains(c.Detail, "--client-cert") {
					t.Errorf("%s fails without saying the proxy wants a client certificate: %s", c.Name, c.Detail)
				}
			}
		}
		if !failed {
			t.Fatal("a proxy that requires a client certificate passed without one")
		}
		o := opts(port)
		clientLeaf, clientKey := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "cks.kms.us-east-1.amazonaws.com"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, p.intermediate, p.interKey)
		o.ClientCert = &tls.Certificate{Certificate: [][]byte{clientLeaf.Raw, p.intermediate.Raw}, PrivateKey: clientKey}
		if rep := Run(ctx, o); rep.Failed != 0 {
			t.Errorf("with a client certificate: %d failed: %+v", rep.Failed, rep.Checks)
		}
	})
}

// TestHTTPAnswers injects the answers a broken proxy (or what stands in
// front of it) gives to GetHealthStatus; each names KMS's error.
func TestHTTPAnswers(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	leaf, key := p.leaf(t, []string{"localhost"}, now.Add(-time.Hour), now.Add(90*24*time.Hour))
	answer := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write([]byte(body))
		}
	}
	fleet := func(statuses ...string) string {
		var entries []string
		for i, s := range statuses {
			entries = append(entries, fmt.Sprintf(`{"id":"hsm%d","model":"m","healthStatus":%q}`, i, s))
		}
		return fmt.Sprintf(`{"xksProxyFleetSize":1,"xksProxyVendor":"v","xksProxyModel":"m 1","ekmVendor":"e","ekmFleetDetails":[%s]}`, strings.Join(entries, ","))
	}
	for _, tc := range []struct {
		name, check, kmsError string
		handler               http.HandlerFunc
	}{
		{"no such key store", CheckURIPath, InvalidConfiguration, answer(404, `{"errorName":"InvalidUriPathException"}`)},
		{"a 404 page", CheckURIPath, InvalidConfiguration, answer(404, `<html>not found</html>`)},
		{"wrong signature", CheckCredential, InvalidCredentials, answer(401, `{"errorName":"AuthenticationFailedException"}`)},
		{"denied", CheckCredential, AccessDenied, answer(403, `{"errorName":"AccessDeniedException"}`)},
		{"HSM timeout", CheckHealth, NotReachable, answer(503, `{"errorName":"DependencyTimeoutException"}`)},
		{"not an XKS error", CheckHealth, InvalidResponse, answer(502, `Bad Gateway`)},
		{"fleet size 0", CheckHealth, InvalidResponse, answer(200, `{"xksProxyFleetSize":0,"ekmFleetDetails":[]}`)},
		{"every HSM unavailable", CheckHealth, NotReachable, answer(200, fleet("UNAVAILABLE", "UNAVAILABLE"))},
		{"unknown HSM status", CheckHealth, InvalidResponse, answer(200, fleet("FINE"))},
		{"over KMS's 250 ms", CheckLatency, TimedOut, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(300 * time.Millisecond)
			answer(200, healthyAnswer)(w, r)
		}},
		{"clock 10 minutes ahead", CheckClockSkew, InvalidCredentials, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Date", time.Now().Add(10*time.Minute).UTC().Format(http.TimeFormat))
			answer(200, healthyAnswer)(w, r)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := serveTLSWith(t, &tls.Config{}, tc.handler, key, leaf, p.intermediate)
			rep := Run(context.Background(), Options{Endpoint: "https://localhost:" + port, URIPath: "/kms/xks/v1", Creds: testCreds,
				CAFile: writePEM(t, p.root), TrustedRoots: fingerprintList(t, p.root), Timeout: 5 * time.Second})
			expectOnlyFailure(t, rep, tc.check, tc.kmsError)
		})
	}
	t.Run("some HSMs unavailable", func(t *testing.T) {
		port := serveTLSWith(t, &tls.Config{}, answer(200, fleet("ACTIVE", "UNAVAILABLE")), key, leaf, p.intermediate)
		rep := Run(context.Background(), Options{Endpoint: "https://localhost:" + port, URIPath: "/kms/xks/v1", Creds: testCreds,
			CAFile: writePEM(t, p.root), TrustedRoots: fingerprintList(t, p.root)})
		if c := check(t, rep, CheckHealth); c.Status != Warn || rep.Failed != 0 {
			t.Errorf("one HSM of two unavailable: %+v, %d failed", c, rep.Failed)
		}
	})
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rep := Run(context.Background(), Options{Endpoint: "https://" + addr, URIPath: "/kms/xks/v1", Timeout: 2 * time.Second})
	expectOnlyFailure(t, rep, CheckIPv4, NotReachable)
	if c := check(t, rep, CheckTLSVersion); c.Status != Skip {
		t.Errorf("TLS after an unreachable address: %+v", c)
	}
}

func TestBuiltInTrustedRoots(t *testing.T) {
	roots := AWSTrustedRoots()
	if roots.Len() != 130 {
		t.Errorf("the built-in list has %d roots, want AWS's 130", roots.Len())
	}
	// Amazon Root CA 1's SHA-256 fingerprint, as Amazon Trust Services publishes it.
	sum, _ := hex.DecodeString("8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e")
	if r, ok := roots.roots[[sha256.Size]byte(sum)]; !ok || r.Alias != "amazonrootca1" {
		t.Errorf("Amazon Root CA 1 is not on the list: %+v", r)
	}
	if _, err := ParseTrustedRoots([]byte("x\tnot-hex\n"), "bad"); err == nil {
		t.Error("a line without a fingerprint was accepted")
	}
	var pe *os.PathError
	if _, err := LoadTrustedRoots(filepath.Join(t.TempDir(), "absent")); !errors.As(err, &pe) {
		t.Errorf("an absent file: %v", err)
	}
}
