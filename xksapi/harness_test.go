package xksapi_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
	"github.com/xksproxy/xksproxy/internal/testlog"
	"github.com/xksproxy/xksproxy/internal/testpki"
	"github.com/xksproxy/xksproxy/xksapi"
	"github.com/xksproxy/xksproxy/xksclient"
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

// secondToken is a second HSM of the node, for the tests of a node with
// several HSMs.
const secondToken = "xksapi-test-2"

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	tokens, err := softhsm.TestTokens("xksapi-test-", testPIN, testToken, secondToken)
	if err != nil {
		fmt.Fprintln(os.Stderr, "init token:", err)
		return 1
	}
	defer tokens.Remove()
	testModule, tokenDir = tokens.Module, tokens.TokenDir()
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
//	                  kdis (disabled), kenc (encrypt only), kwrap (WRAP and
//	                  UNWRAP only), kgone (no HSM object)
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
	logs   *testlog.Buffer
	stores []fsm.KeyStore
	keys   []fsm.Key
	certs  *testpki.CA
}

type fixtureOptions struct {
	mtlsSubject string
	hsm         xksapi.HSM
	now         func() time.Time
	maxInFlight int
	// overloadWait 0 turns load shedding off: these tests are about
	// behaviour, and a busy CI machine must not turn their requests away.
	overloadWait time.Duration
	cpuWait      func() time.Duration
	ready        func() error
	// configure adjusts the server's configuration last.
	configure func(*xksapi.Config)
}

func newFixture(t testing.TB, opts fixtureOptions) *fixture {
	t.Helper()
	f := &fixture{t: t, views: &fsm.ViewHolder{}, logs: &testlog.Buffer{}}
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
		{KeyStore: "a", ID: "kwrap", Usage: fsm.UsageWrap | fsm.UsageUnwrap, Enabled: true, CurrentVersion: 1, Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "a-kwrap-v1"}}},
		{KeyStore: "a", ID: "kgone", Usage: both, Enabled: true, CurrentVersion: 1, Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "a-kgone-v1"}}},
		{KeyStore: "b", ID: "k1", Usage: both, Enabled: true, CurrentVersion: 1, Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "b-k1-v1"}}},
	}
	f.publish()

	f.certs = testpki.NewCA(t, "test CA")
	serverCert, serverKey := f.certs.Issue(t, "localhost")
	tlsFiles := xksapi.TLSConfig{CertFile: serverCert, KeyFile: serverKey}
	if opts.mtlsSubject != "" {
		tlsFiles.ClientCAFile = f.certs.CAFile
		tlsFiles.ClientSubjectCN = opts.mtlsSubject
	}
	tlsCfg, err := tlsFiles.Build()
	if err != nil {
		t.Fatal(err)
	}
	f.caFile = f.certs.CAFile
	h := opts.hsm
	if h == nil {
		h = testHSM
	}
	log := zerolog.New(f.logs)
	if opts.overloadWait == 0 {
		opts.overloadWait = -1
	}
	cfg := xksapi.Config{NodeID: "test-node", Now: opts.now, MaxInFlight: opts.maxInFlight,
		OverloadWait: opts.overloadWait, CPUWait: opts.cpuWait, Ready: opts.ready}
	if opts.configure != nil {
		opts.configure(&cfg)
	}
	f.server = xksapi.New(cfg, f.views, h, log)
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
