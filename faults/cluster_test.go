package faults

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/xksclient"
)

// What deploy/three-site seeds and names.
const (
	keyStore  = "payments"
	uriPath   = "/payments/kms/xks/v1"
	region    = "eu-west-1"
	keyID     = "payments-key-1"
	accessKey = "PAYMENTSCREDENTIALAAAA"
	principal = "arn:aws:iam::111122223333:role/faults"
	kmsCN     = "cks.kms.eu-west-1.amazonaws.com"
	kmsKeyARN = "arn:aws:kms:eu-west-1:111122223333:key/0b5e-faults"
)

var (
	siteAddrs = map[string]string{"a": "10.1.0.11", "b": "10.2.0.11", "c": "10.3.0.11"}
	siteOrder = []string{"a", "b", "c"}
)

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// xksproxyBinary builds ./cmd/xksproxy once per test binary, without the race
// detector: the nodes run as they would in production.
func xksproxyBinary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "xksproxy-faults-bin-")
		if build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "xksproxy")
		out, err := exec.Command("go", "build", "-o", build.bin, "github.com/xksproxy/xksproxy/cmd/xksproxy").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build ./cmd/xksproxy: %w: %s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// fleet is deploy/three-site booted in the lab (or on loopback): one node
// per site.
type fleet struct {
	t          *testing.T
	lab        *lab
	bin, dir   string
	nodes      []*node
	staleness  time.Duration
	secret     string
	serverCA   string
	clientCert tls.Certificate
}

type node struct {
	f       *fleet
	site    *site
	id      string
	dir     string
	conf    string
	logPath string
	proc    *os.Process
	done    chan struct{}
	exit    error // how the last process ended, once done is closed
	xks     *xksclient.Client
	// env is added to serve's environment at the next start (fault
	// injection: XKSPROXY_FAULT_CLOCK_OFFSET).
	env []string
	// binMu guards bin, which a rolling upgrade changes while the CLI runs.
	binMu sync.Mutex
	bin   string
}

func randomSecret(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("/", "x", "+", "y", "=", "").Replace(base64.StdEncoding.EncodeToString(b))
}

// siteConfig is deploy/three-site/site-NAME.toml with only its paths moved
// under dir and staleness_limit set to the suite's; every substitution
// must match, so that the example cannot drift away from what runs here.
func siteConfig(t testing.TB, name, dir string, staleness time.Duration) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "three-site", "site-"+name+".toml"))
	if err != nil {
		t.Fatal(err)
	}
	return substitute(t, name, string(b), [][2]string{
		{`"/etc/xksproxy/`, `"` + dir + `/etc/`},
		{`"/var/lib/xksproxy"`, `"` + dir + `/data"`},
		{`staleness_limit = "2m"`, fmt.Sprintf(`staleness_limit = "%s"`, staleness)},
	})
}

// substitute replaces each pair's first string in site name's TOML text by
// its second, failing if one is not there.
func substitute(t testing.TB, name, text string, pairs [][2]string) string {
	t.Helper()
	for _, r := range pairs {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("deploy/three-site/site-%s.toml no longer holds %s, which the suite substitutes", name, r[0])
		}
		text = strings.ReplaceAll(text, r[0], r[1])
	}
	return text
}

// newFleet prepares every site of the lab as an operator would and starts
// the three nodes, after prepare.
func newFleet(t *testing.T, staleness time.Duration, prepare ...func(*fleet)) *fleet {
	t.Helper()
	l := newLab(t, siteAddrs, siteOrder)
	f := prepareFleet(t, l.sites, xksproxyBinary(t), staleness, func(s *site, dir string) string { return siteConfig(t, s.name, dir, staleness) })
	f.lab = l
	for _, p := range prepare {
		p(f)
	}
	f.boot()
	return f
}

// prepareFleet does at every site what an operator would before the first
// start, with bin: PKI, a SoftHSMv2 token, the ceremony import and the
// site's TOML, which config writes for the node's directory.
func prepareFleet(t *testing.T, sites []*site, bin string, staleness time.Duration, config func(s *site, dir string) string) *fleet {
	t.Helper()
	f := &fleet{t: t, bin: bin, dir: t.TempDir(), staleness: staleness, secret: randomSecret(t, 40)}
	clusterCA, serverCA, awsCA := newPKICA(t, "xksproxy cluster CA"), newPKICA(t, "stand-in public CA"), newPKICA(t, "stand-in AWS KMS client CA")
	f.serverCA = filepath.Join(f.dir, "server-ca.pem")
	serverCA.writeCA(t, f.serverCA)
	awsCA.issue(t, filepath.Join(f.dir, "kms-client.pem"), filepath.Join(f.dir, "kms-client-key.pem"), kmsCN, nil)
	cert, err := tls.LoadX509KeyPair(filepath.Join(f.dir, "kms-client.pem"), filepath.Join(f.dir, "kms-client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	f.clientCert = cert
	ceremony := filepath.Join(f.dir, "ceremony.hex")
	must(t, f.bin, "cluster-keys", "generate", ceremony)
	adminToken, gossipKey := randomSecret(t, 24), base64.StdEncoding.EncodeToString([]byte(randomSecret(t, 24))[:32])
	pin, soPIN := randomSecret(t, 12), randomSecret(t, 12)
	for _, s := range sites {
		n := &node{f: f, site: s, id: "xks-site-" + s.name, dir: filepath.Join(f.dir, "site-"+s.name), bin: bin}
		etc := filepath.Join(n.dir, "etc")
		serverCA.issue(t, filepath.Join(etc, "tls", "server.pem"), filepath.Join(etc, "tls", "server-key.pem"), "xks."+s.name+".example.com", []string{s.addr}, "xks."+s.name+".example.com")
		awsCA.writeCA(t, filepath.Join(etc, "tls", "aws-kms-client-ca.pem"))
		clusterCA.writeCA(t, filepath.Join(etc, "cluster", "ca.pem"))
		clusterCA.issueNode(t, filepath.Join(etc, "cluster", "node.pem"), filepath.Join(etc, "cluster", "node-key.pem"), n.id, []string{s.addr, "127.0.0.1"})
		writeFile(t, filepath.Join(etc, "hsm-pin"), []byte(pin+"\n"))
		writeFile(t, filepath.Join(etc, "admin-token"), []byte(adminToken+"\n"))
		writeFile(t, filepath.Join(etc, "gossip-keys"), []byte(gossipKey+"\n"))
		writeFile(t, filepath.Join(etc, "secrets", "payments-1"), []byte(f.secret+"\n"))
		writeFile(t, filepath.Join(etc, "softhsm2.conf"), []byte("directories.tokendir = "+filepath.Join(n.dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"))
		if err := os.MkdirAll(filepath.Join(n.dir, "tokens"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(n.dir, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "xksproxy", "--so-pin", soPIN, "--pin", pin)
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+filepath.Join(etc, "softhsm2.conf"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("softhsm2-util --init-token for site %s: %v: %s", s.name, err, out)
		}
		n.conf = filepath.Join(n.dir, "node.toml")
		writeFile(t, n.conf, []byte(config(s, n.dir)))
		// The import's HSM calls have the node's 150 ms deadline, which a
		// machine busy with other tests can miss: try again, as an operator
		// would.
		if err := eventually(10*time.Second, func() error {
			out, err := sh(30*time.Second, f.bin, "cluster-keys", "import", ceremony, "--config", n.conf)
			if err != nil && strings.Contains(out, "already holds the cluster keys") {
				return nil
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		n.logPath = filepath.Join(n.dir, "node.log")
		n.newClient(t)
		f.nodes = append(f.nodes, n)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range f.nodes {
				t.Logf("last lines of %s's log:\n%s", n.id, tail(n.logPath, 25))
			}
		}
	})
	return f
}

// boot starts every node, waits until each is ready, opens the seeded key
// store's grants to the suite's principals and round-trips the seeded key
// on every node.
func (f *fleet) boot() {
	t := f.t
	t.Helper()
	for _, n := range f.nodes {
		n.start()
	}
	for _, n := range f.nodes {
		n.waitReady(90 * time.Second)
	}
	if _, err := f.nodes[0].cli("grant", "add", keyStore, "--key", "*", "--principal", "arn:aws:iam::111122223333:role/*"); err != nil {
		t.Fatal(err)
	}
	for _, n := range f.nodes {
		if err := eventually(30*time.Second, func() error { return n.client().RoundTrip(keyID, md("Encrypt"), []byte("hello"), nil) }); err != nil {
			t.Fatalf("%s never round-tripped the seeded key: %v", n.id, err)
		}
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// eventually retries fn every 100 ms until it succeeds or limit passes.
func eventually(limit time.Duration, fn func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *node) binary() string {
	n.binMu.Lock()
	defer n.binMu.Unlock()
	return n.bin
}

// start runs `xksproxy serve` at the node's site. Pdeathsig kills the node
// should the test binary die without its cleanups.
func (n *node) start() {
	t := n.f.t
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	argv := n.site.argv(n.binary(), "serve", "--config", n.conf)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), n.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		n.exit = cmd.Wait()
		logf.Close()
		close(done)
	}()
	n.proc, n.done = cmd.Process, done
	deferCleanup(t, func() {
		cmd.Process.Kill()
		<-done
	})
}

// kill stops the node with SIGKILL and waits for it to be gone.
func (n *node) kill() {
	if n.proc == nil {
		return
	}
	n.proc.Kill()
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		n.f.t.Fatalf("%s survived SIGKILL for 10 s", n.id)
	}
	n.proc = nil
}

func (n *node) running() bool {
	if n.proc == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// ready asks the node's health port, as a load balancer would.
func (n *node) ready() (bool, string) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: n.site.dialer(), DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + n.site.health + "/ready")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK, strings.TrimSpace(string(b))
}

func (n *node) waitReady(limit time.Duration) time.Duration {
	took, err := n.readyWithin(limit)
	if err != nil {
		n.f.t.Fatalf("%v\n%s", err, tail(n.logPath, 30))
	}
	return took
}

// readyWithin waits up to limit for /ready to say 200, and says how long
// that took, or why the node is still not ready.
func (n *node) readyWithin(limit time.Duration) (time.Duration, error) {
	start := time.Now()
	err := eventually(limit, func() error {
		if !n.running() {
			return fmt.Errorf("%s exited", n.id)
		}
		if ok, why := n.ready(); !ok {
			return errors.New(why)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("%s not ready after %s: %w", n.id, limit, err)
	}
	return time.Since(start), nil
}

// cli runs the node's operator CLI at its site against its admin API.
func (n *node) cli(args ...string) (string, error) {
	etc := filepath.Join(n.dir, "etc")
	argv := n.site.argv(n.binary(), append(args,
		"--admin", "https://"+n.site.admin, "--token-file", filepath.Join(etc, "admin-token"), "--ca", filepath.Join(etc, "cluster", "ca.pem"))...)
	return sh(60*time.Second, argv[0], argv[1:]...)
}

// cliJSON runs the CLI with --json and decodes its answer into out.
func (n *node) cliJSON(out any, args ...string) error {
	text, err := n.cli(append(args, "--json")...)
	// A partly confirmed change prints its JSON, then why it exits 3.
	if jerr := json.NewDecoder(strings.NewReader(text)).Decode(out); err == nil && jerr != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), jerr, text)
	}
	return err
}

// clusterStatus is the part of `cluster status --json` the suite reads.
type clusterStatus struct {
	CommandSet int `json:"commandSet"`
	Leader     *struct {
		ID string `json:"id"`
	} `json:"leader"`
	Nodes []struct {
		ID           string `json:"id"`
		State        string `json:"raftState"`
		AppliedIndex uint64 `json:"appliedIndex"`
		CommitIndex  uint64 `json:"commitIndex"`
		Ready        bool   `json:"ready"`
		NotReady     string `json:"notReadyReason"`
		Version      string `json:"version"`    // absent from builds before versions were reported
		CommandSet   int    `json:"commandSet"` // likewise
	} `json:"nodes"`
}

// changeResult is the JSON of a confirmed change (disable, enable, rotate).
type changeResult struct {
	Index uint64 `json:"index"`
	Acks  []struct {
		Node      string `json:"node"`
		Confirmed bool   `json:"confirmed"`
		After     int64  `json:"afterNanos"`
		Error     string `json:"error"`
	} `json:"acks"`
	Confirmed int    `json:"confirmed"`
	Nodes     int    `json:"nodes"`
	Elapsed   string `json:"elapsed"`
}

func (n *node) status() (clusterStatus, error) {
	var st clusterStatus
	err := n.cliJSON(&st, "cluster", "status")
	return st, err
}

// leader asks the running nodes (except those in skip) who leads, until
// one of them names a leader other than those in skip.
func (f *fleet) leader(limit time.Duration, skip ...*node) *node {
	var found *node
	err := eventually(limit, func() error {
		for _, n := range f.nodes {
			if !n.running() || contains(skip, n) {
				continue
			}
			st, err := n.status()
			if err != nil || st.Leader == nil {
				continue
			}
			for _, m := range f.nodes {
				if m.id == st.Leader.ID && !contains(skip, m) {
					found = m
					return nil
				}
			}
		}
		return errors.New("no leader")
	})
	if err != nil {
		f.t.Fatalf("no leader within %s", limit)
	}
	return found
}

func contains(ns []*node, n *node) bool {
	for _, m := range ns {
		if m == n {
			return true
		}
	}
	return false
}

func (f *fleet) others(n *node) []*node {
	var out []*node
	for _, m := range f.nodes {
		if m != n {
			out = append(out, m)
		}
	}
	return out
}

func sitesOf(ns []*node) []*site {
	var out []*site
	for _, n := range ns {
		out = append(out, n.site)
	}
	return out
}

// client is AWS KMS at the node's site: SigV4 from xksclient, mTLS
// with the KMS client certificate, connections made in the site's namespace.
func (n *node) client() *xksclient.Client { return n.xks }

// newClient makes the node's client once, before any goroutine shares it.
func (n *node) newClient(t testing.TB) {
	hc, err := xksclient.NewHTTPClient(n.f.serverCA, &n.f.clientCert)
	if err != nil {
		t.Fatal(err)
	}
	hc.Timeout = 3 * time.Second
	hc.Transport.(*http.Transport).DialContext = n.site.dialer()
	n.xks = &xksclient.Client{Endpoint: "https://" + n.site.api, URIPath: uriPath,
		Creds: xksclient.Credentials{AccessKeyID: accessKey, Secret: n.f.secret, Region: region}, HTTP: hc}
}

var requestSeq struct {
	sync.Mutex
	n int
}

func md(op string) xksclient.RequestMetadata {
	requestSeq.Lock()
	requestSeq.n++
	id := fmt.Sprintf("faults-%d-%d", os.Getpid(), requestSeq.n)
	requestSeq.Unlock()
	return xksclient.RequestMetadata{AWSPrincipalARN: principal, KMSKeyARN: kmsKeyARN, KMSOperation: op, KMSRequestID: id}
}

// outcome is how one XKS request ended: the HTTP status and errorName, or
// status 0 when there was no answer (refused, timed out).
type outcome struct {
	status int
	name   string
	err    error
}

func (o outcome) String() string {
	if o.status == 0 {
		return "no answer"
	}
	if o.status == 200 {
		return "200"
	}
	return fmt.Sprintf("%d %s", o.status, o.name)
}

// retryable is what AWS KMS retries: 500 InternalException, 503
// DependencyTimeoutException, 429 ThrottlingException. No answer at all
// (connection refused while the node starts) is retried by KMS too.
func (o outcome) retryable() bool {
	return o.status == 0 || o.status == 429 || o.status == 503 || (o.status == 500 && o.name == "InternalException")
}

func classify(err error) outcome {
	if err == nil {
		return outcome{status: 200}
	}
	var xe *xksclient.Error
	if errors.As(err, &xe) {
		return outcome{status: xe.Status, name: xe.Name, err: err}
	}
	return outcome{err: err}
}

// encrypt sends one Encrypt for the seeded key.
func (n *node) encrypt(plaintext []byte) (*xksclient.EncryptResponse, outcome) {
	r, err := n.client().Encrypt(keyID, &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: plaintext})
	return r, classify(err)
}

// logHas reports whether the node's log holds a line containing s.
func (n *node) logHas(s string) bool {
	fh, err := os.Open(n.logPath)
	if err != nil {
		return false
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}

// written is a ciphertext answered 200 and the plaintext it must decrypt to.
type written struct {
	plaintext []byte
	ct        *xksclient.EncryptResponse
}

func (n *node) decrypt(wr written) error {
	got, err := n.client().Decrypt(keyID, &xksclient.DecryptRequest{RequestMetadata: md("Decrypt"),
		Ciphertext: wr.ct.Ciphertext, CiphertextMetadata: wr.ct.CiphertextMetadata, IV: wr.ct.IV, Tag: wr.ct.Tag})
	if err == nil && !bytes.Equal(got, wr.plaintext) {
		err = errors.New("decrypted to other bytes than were encrypted")
	}
	return err
}

// undecryptable decrypts every ciphertext on every node (the nodes in
// parallel) and counts those that did not give their plaintext back.
func (f *fleet) undecryptable(kept []written) (bad int, first string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range f.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, wr := range kept {
				if err := n.decrypt(wr); err != nil {
					mu.Lock()
					bad++
					if first == "" {
						first = fmt.Sprintf("%s: %v", n.id, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return bad, first
}

// missingGrants counts, over every node, the acknowledged grants (by
// principal) that its `grant list` lacks.
func (f *fleet) missingGrants(principals []string) int {
	missing := 0
	for _, n := range f.nodes {
		out, err := n.cli("grant", "list", keyStore, "--json")
		if err != nil {
			f.t.Fatalf("grant list on %s: %v", n.id, err)
		}
		for _, p := range principals {
			if !strings.Contains(out, `"`+p+`"`) {
				missing++
			}
		}
	}
	return missing
}
