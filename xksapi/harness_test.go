package xksapi_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/bench/xksclient"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
	"github.com/xksproxy/xksproxy/xksapi"
)

// One SoftHSMv2 token and one logged-in HSM serve the whole package: PKCS#11
// initialisation and login are per process.
var (
	testHSM    *hsm.HSM
	testModule string
	tokenDir   string
	testPIN    = "1234-test-pin"
)

const testToken = "xksapi-test"

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "xksapi-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	conf, err := softhsm.WriteConfig(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tokenDir = filepath.Join(dir, "tokens")
	os.Setenv("SOFTHSM2_CONF", conf)
	if testModule, err = softhsm.ModulePath(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := softhsm.InitToken(testModule, testToken, "5678-so-pin", testPIN); err != nil {
		fmt.Fprintln(os.Stderr, "init token:", err)
		return 1
	}
	// Generous HSM deadlines: these tests are about the API, and the race
	// detector makes every call many times slower than in production.
	testHSM, err = hsm.Open(hsm.Config{ModulePath: testModule, TokenLabel: testToken, PIN: testPIN,
		HealthInterval: 200 * time.Millisecond, WaitTimeout: 2 * time.Second, CallTimeout: 2 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open HSM:", err)
		return 1
	}
	defer testHSM.Close()
	for _, label := range []string{"a-k1-v1", "a-k1-v2", "a-kdis-v1", "a-kenc-v1", "b-k1-v1"} {
		if err := testHSM.GenerateKey(label); err != nil {
			fmt.Fprintln(os.Stderr, "generate key:", err)
			return 1
		}
	}
	return m.Run()
}

// fixture is a running server with two key stores:
//
//	a  /a/kms/xks/v1  two credentials; keys k1 (versions 1, 2; current 2),
//	                  kdis (disabled), kenc (encrypt only), kgone (no HSM object)
//	b  /kms/xks/v1    one credential; key k1
type fixture struct {
	t      testing.TB
	server *xksapi.Server
	views  *fsm.ViewHolder
	addr   string
	health string
	caFile string
	credsA []fsm.Credential
	credB  fsm.Credential
	logs   *syncBuffer
	stores []fsm.KeyStore
	keys   []fsm.Key
	certs  *testPKI
}

type fixtureOptions struct {
	mtlsSubject string
	hsm         xksapi.HSM
	now         func() time.Time
	maxInFlight int
}

func newFixture(t testing.TB, opts fixtureOptions) *fixture {
	t.Helper()
	f := &fixture{t: t, views: &fsm.ViewHolder{}, logs: &syncBuffer{}}
	f.credsA = []fsm.Credential{fsm.GenerateCredential(), fsm.GenerateCredential()}
	f.credB = fsm.GenerateCredential()
	f.stores = []fsm.KeyStore{
		{Name: "a", URIPath: "/a/kms/xks/v1", Region: "us-east-1", Enabled: true, Credentials: f.credsA},
		{Name: "b", URIPath: "/kms/xks/v1", Region: "eu-west-1", Enabled: true, Credentials: []fsm.Credential{f.credB}},
	}
	both := fsm.UsageEncrypt | fsm.UsageDecrypt
	f.keys = []fsm.Key{
		{KeyStore: "a", ID: "k1", Usage: both, Enabled: true, CurrentVersion: 2,
			Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "a-k1-v1"}, {Number: 2, HSMLabel: "a-k1-v2"}}},
		{KeyStore: "a", ID: "kdis", Usage: both, Enabled: false, CurrentVersion: 1, Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "a-kdis-v1"}}},
		{KeyStore: "a", ID: "kenc", Usage: fsm.UsageEncrypt, Enabled: true, CurrentVersion: 1, Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "a-kenc-v1"}}},
		{KeyStore: "a", ID: "kgone", Usage: both, Enabled: true, CurrentVersion: 1, Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "a-kgone-v1"}}},
		{KeyStore: "b", ID: "k1", Usage: both, Enabled: true, CurrentVersion: 1, Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "b-k1-v1"}}},
	}
	f.publish()

	f.certs = newTestPKI(t)
	tlsFiles := xksapi.TLSConfig{CertFile: f.certs.serverCert, KeyFile: f.certs.serverKey}
	if opts.mtlsSubject != "" {
		tlsFiles.ClientCAFile = f.certs.caFile
		tlsFiles.ClientSubjectCN = opts.mtlsSubject
	}
	tlsCfg, err := tlsFiles.Build()
	if err != nil {
		t.Fatal(err)
	}
	f.caFile = f.certs.caFile
	h := opts.hsm
	if h == nil {
		h = testHSM
	}
	log := zerolog.New(f.logs)
	f.server = xksapi.New(xksapi.Config{NodeID: "test-node", Now: opts.now, MaxInFlight: opts.maxInFlight}, f.views, h, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr, f.health = ln.Addr().String(), hln.Addr().String()
	go f.server.ServeTLS(ln, tlsCfg)
	go f.server.ServeHealth(hln)
	t.Cleanup(func() { f.server.Shutdown() })
	return f
}

func (f *fixture) publish() {
	f.t.Helper()
	v, err := fsm.Build(uint64(time.Now().UnixNano()), f.stores, f.keys)
	if err != nil {
		f.t.Fatal(err)
	}
	f.views.Publish(v)
}

// client returns a client for key store a (or b) signing with cred.
func (f *fixture) client(store string, cred fsm.Credential, clientCert *tls.Certificate) *xksclient.Client {
	f.t.Helper()
	hc, err := xksclient.NewHTTPClient(f.caFile, clientCert)
	if err != nil {
		f.t.Fatal(err)
	}
	c := &xksclient.Client{Endpoint: "https://" + f.addr, HTTP: hc,
		Creds: xksclient.Credentials{AccessKeyID: cred.AccessKeyID, Secret: string(cred.Secret)}}
	switch store {
	case "a":
		c.URIPath, c.Creds.Region = "/a/kms/xks/v1", "us-east-1"
	default:
		c.URIPath, c.Creds.Region = "/kms/xks/v1", "eu-west-1"
	}
	f.t.Cleanup(hc.CloseIdleConnections)
	return c
}

func (f *fixture) clientA() *xksclient.Client { return f.client("a", f.credsA[0], nil) }

func metadata(op string) xksclient.RequestMetadata {
	return xksclient.RequestMetadata{
		AWSPrincipalARN: "arn:aws:iam::111122223333:user/alice",
		KMSKeyARN:       "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		KMSOperation:    op,
		KMSRequestID:    fmt.Sprintf("req-%d", time.Now().UnixNano()),
		KMSViaService:   "ebs",
	}
}

// wantXKSError asserts err is the proxy's JSON refusal with name and status.
func wantXKSError(t testing.TB, err error, status int, name string) {
	t.Helper()
	xe, ok := err.(*xksclient.Error)
	if !ok {
		t.Fatalf("want %d %s, got %v", status, name, err)
	}
	if xe.Status != status || xe.Name != name {
		t.Fatalf("want %d %s, got %d %s (%s)", status, name, xe.Status, xe.Name, xe.Message)
	}
	if xe.Message == "" {
		t.Fatalf("%s carries no errorMessage", name)
	}
}

// rawRequest sends an unsigned or hand-built request and returns status and body.
func (f *fixture) rawRequest(method, path string, header map[string]string, body []byte) (int, []byte) {
	f.t.Helper()
	hc, err := xksclient.NewHTTPClient(f.caFile, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "https://"+f.addr+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	return resp.StatusCode, out.Bytes()
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testPKI is a CA with a server certificate for 127.0.0.1/localhost and a way
// to issue client certificates.
type testPKI struct {
	dir        string
	caFile     string
	ca         *x509.Certificate
	caKey      *ecdsa.PrivateKey
	serverCert string
	serverKey  string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.ca, p.caKey = p.issue(t, "test CA", nil, nil, "ca")
	p.caFile = filepath.Join(p.dir, "ca.pem")
	p.serverCert, p.serverKey = filepath.Join(p.dir, "server.pem"), filepath.Join(p.dir, "server-key.pem")
	p.issue(t, "localhost", p.ca, p.caKey, "server")
	return p
}

// issue makes a certificate signed by parent (self-signed CA when nil) and
// writes name.pem and name-key.pem.
func (p *testPKI) issue(t testing.TB, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p.dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(p.dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// clientCert issues a client certificate with cn from this CA (or from a
// fresh, untrusted CA when foreign).
func (p *testPKI) clientCert(t testing.TB, cn string, foreign bool) *tls.Certificate {
	t.Helper()
	ca, caKey := p.ca, p.caKey
	if foreign {
		ca, caKey = p.issue(t, "foreign CA", nil, nil, "foreign-ca")
	}
	name := fmt.Sprintf("client-%d", time.Now().UnixNano())
	p.issue(t, cn, ca, caKey, name)
	c, err := tls.LoadX509KeyPair(filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func mustRoots(t testing.TB, caFile string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no CA in " + caFile)
	}
	return pool
}
