package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/devenv"
	"github.com/xksproxy/xksproxy/internal/testlog"
	"github.com/xksproxy/xksproxy/internal/testmetrics"
	"github.com/xksproxy/xksproxy/xksclient"
)

// buildBinary compiles xksproxy once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xksproxy")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freeLoopbackPort returns a loopback port that is free together with the
// two above it, where `dev --nodes 3` puts its other API ports. It is picked
// below the kernel's ephemeral range (32768 and up by default): a port
// there can be taken between this check and the node's listen by any
// outgoing connection of the tests running alongside, which happened to a
// three-node dev in CI.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	const lo, hi = 20000, 32000
	for range 100 {
		port := lo + rand.IntN(hi-lo)
		if loopbackPortsFree(port, 3) {
			return port
		}
	}
	t.Fatalf("no three free loopback ports in %d..%d", lo, hi)
	return 0
}

func loopbackPortsFree(port, n int) bool {
	for p := port; p < port+n; p++ {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

type process struct {
	cmd    *exec.Cmd
	stdout *testlog.Buffer
	stderr *testlog.Buffer
}

func start(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), stdout: &testlog.Buffer{}, stderr: &testlog.Buffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	// Its own process group, so that cleanup also reaches the nodes dev
	// started (they hold its output pipes open); WaitDelay bounds Wait.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.cmd.Wait()
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
}

func waitForFile(t *testing.T, path string, p *process) []byte {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			return b
		}
		if p.cmd.ProcessState != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not appear\nstdout:\n%s\nstderr:\n%s", path, p.stdout.String(), p.stderr.String())
	return nil
}

func TestDevQuickStart(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	port := freeLoopbackPort(t)
	listen := "127.0.0.1:" + strconv.Itoa(port)

	p := start(t, bin, "dev", "--data", dir, "--listen", listen)
	client := readClientFile(t, dir, p)
	if client.Endpoint != "https://"+listen || len(client.Endpoints) != 1 || client.Endpoints[0] != client.Endpoint ||
		client.URIPath != "/demo/kms/xks/v1" || client.KeyStore == "" || client.AccessKeyID == "" || client.SecretAccessKey == "" ||
		client.Region == "" || client.KeyID == "" || !filepath.IsAbs(client.CACertFile) {
		t.Fatalf("client.json = %+v", client)
	}
	var console devenv.KMSConsoleFile
	b, err := os.ReadFile(filepath.Join(dir, "kms-console.json"))
	if err != nil || json.Unmarshal(b, &console) != nil || console.XksProxyURIPath != client.URIPath ||
		console.Credential.AccessKeyID != client.AccessKeyID || console.Credential.RawSecretAccessKey != client.SecretAccessKey {
		t.Fatalf("kms-console.json = %s (%v)", b, err)
	}
	assertPortsOutsideReservedRange(t, dir, port)

	// The welcome reads the secret from its file instead of printing it.
	if strings.Contains(p.stdout.String(), client.SecretAccessKey) {
		t.Fatal("dev printed the SigV4 secret")
	}
	// serve destroyed its copy of the ceremony material once imported;
	// dev keeps its own for nodes added later.
	if _, err := os.Stat(filepath.Join(dir, "node1", "cluster-keys.import")); !os.IsNotExist(err) {
		t.Fatalf("the node's copy of the cluster key material is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "secrets", "cluster-keys")); err != nil {
		t.Fatalf("dev lost its cluster key material: %v", err)
	}

	// The printed curl command works as printed.
	curlLine := printedCurl(t, p.stdout.String())
	out, err := exec.Command("sh", "-c", curlLine+" -sS -w '\n%{http_code}'").CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "200") || !strings.Contains(string(out), `"ciphertext"`) {
		t.Fatalf("printed curl command: %v\n%s\ncommand: %s", err, out, curlLine)
	}

	c := clientFrom(t, client, 0)
	enc, err := c.Encrypt(client.KeyID, &xksclient.EncryptRequest{RequestMetadata: testMetadata("Encrypt"), Plaintext: []byte("survives restarts")})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(client.HealthEndpoints[0] + "/ready"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/ready on the health port: %v %v", resp, err)
	}
	// The health port's metrics: the encrypts just made (dev's own check,
	// the printed curl, this client), the HSM pool, the one-node cluster
	// this node leads, the runtime, and nothing secret.
	body, m := testmetrics.Scrape(t, client.HealthEndpoints[0]+"/metrics")
	if got := m.Value(t, "xksproxy_requests_total", "operation", "encrypt", "outcome", "ok"); got < 3 {
		t.Errorf("%v successful encrypts counted, want at least 3", got)
	}
	if got := m.Value(t, "xksproxy_request_duration_seconds", "operation", "encrypt"); got < 3 {
		t.Errorf("%v encrypt durations observed, want at least 3", got)
	}
	// dev's certificates last two years; its credential was made just now.
	for _, listener := range []string{"api", "admin"} {
		if got := m.Value(t, "xksproxy_tls_certificate_expiry_seconds", "listener", listener); got < 700*86400 || got > 731*86400 {
			t.Errorf("the %s certificate expires in %v s, want about two years", listener, got)
		}
	}
	if got := m.Value(t, "xksproxy_credential_age_seconds", "key_store", client.KeyStore, "access_key_id", client.AccessKeyID); got < 0 || got > 600 {
		t.Errorf("the demo credential is %v s old", got)
	}
	// Raft's and memberlist's own metrics, bridged under our names.
	if m.Value(t, "xksproxy_raft_leaderships_total") < 1 || m.Value(t, "xksproxy_raft_applies_total") < 1 {
		t.Error("raft's metrics do not count this node's leadership and commands")
	}
	if commits := m["xksproxy_raft_commit_seconds"]; commits == nil || commits.GetMetric()[0].GetSummary().GetSampleCount() == 0 {
		t.Errorf("raft's commit time is not bridged: %v", commits)
	}
	if rounds := m["xksproxy_gossip_round_seconds"]; rounds == nil || rounds.GetMetric()[0].GetSummary().GetSampleCount() == 0 {
		t.Errorf("memberlist's gossip rounds are not bridged: %v", rounds)
	}
	checkAlertRules(t, m)
	checkDashboard(t, m)
	for _, name := range []string{"xksproxy_hsm_sessions", "xksproxy_cluster_applied_index", "go_goroutines", "process_resident_memory_bytes"} {
		if m.Value(t, name) <= 0 {
			t.Errorf("%s is not positive", name)
		}
	}
	for name, want := range map[string]float64{"xksproxy_ready": 1, "xksproxy_cluster_is_leader": 1, "xksproxy_cluster_leader_known": 1,
		"xksproxy_cluster_leader_contact_age_seconds": 0, "xksproxy_cluster_fleet_members": 1, "xksproxy_hsm_stuck_calls": 0, "xksproxy_hsm_in_rotation": 1} {
		if got := m.Value(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if m.Value(t, "xksproxy_hsm_status", "status", "ACTIVE") != 1 || m.Value(t, "xksproxy_hsm_status", "status", "UNAVAILABLE") != 0 {
		t.Error("xksproxy_hsm_status does not say ACTIVE")
	}
	// One HSM: every HSM series has one sample, named by the token's label.
	if hsms := m["xksproxy_hsm_sessions"].GetMetric(); len(hsms) != 1 || len(hsms[0].GetLabel()) != 1 || hsms[0].GetLabel()[0].GetName() != "hsm" || hsms[0].GetLabel()[0].GetValue() == "" {
		t.Errorf("xksproxy_hsm_sessions on a node with one HSM: %v", hsms)
	}
	if got := m.Value(t, "xksproxy_hsm_served_total"); got < 3 {
		t.Errorf("xksproxy_hsm_served_total = %v after three encrypts", got)
	}
	for _, secret := range []string{client.SecretAccessKey, "survives restarts", base64.StdEncoding.EncodeToString([]byte("survives restarts"))} {
		if strings.Contains(body, secret) {
			t.Fatalf("the metrics contain %q", secret)
		}
	}
	// An access key id is no secret (every request's log line names it),
	// but only the credential's age carries it, as AWS KMS's own metric does.
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, client.AccessKeyID) && !strings.HasPrefix(line, "xksproxy_credential_age_seconds{") {
			t.Fatalf("a metric other than the credential's age names the access key id: %s", line)
		}
	}
	// Key usages by the specification's names: a key may hold neither
	// ENCRYPT nor DECRYPT. An empty --usage is refused, not defaulted.
	if out, err := cli(t, bin, dir, 0, "key", "create", client.KeyStore, "wrap-only", "--usage", "WRAP,UNWRAP"); err != nil {
		t.Fatalf("key create --usage WRAP,UNWRAP: %v\n%s", err, out)
	}
	if meta, err := c.Metadata("wrap-only", testMetadata("DescribeKey")); err != nil || strings.Join(meta.KeyUsage, ",") != "WRAP,UNWRAP" {
		t.Fatalf("metadata of a WRAP/UNWRAP key: %+v %v", meta, err)
	}
	_, err = c.Encrypt("wrap-only", &xksclient.EncryptRequest{RequestMetadata: testMetadata("Encrypt"), Plaintext: []byte("p")})
	if xe, ok := err.(*xksclient.Error); !ok || xe.Name != "InvalidKeyUsageException" {
		t.Fatalf("encrypt with a WRAP/UNWRAP key: %v", err)
	}
	if out, err := cli(t, bin, dir, 0, "key", "create", client.KeyStore, "no-usage", "--usage", ""); err == nil || !strings.Contains(out, "--usage is empty") {
		t.Fatalf("key create --usage \"\": %v\n%s", err, out)
	}

	// The user disables the demo key, as the README's kill switch does.
	if out, err := cli(t, bin, dir, 0, "key", "disable", client.KeyStore, client.KeyID); err != nil {
		t.Fatalf("key disable: %v\n%s", err, out)
	}
	checkBackupCommands(t, bin, dir)
	checkOperatorCommands(t, bin, dir, client.HealthEndpoints[0])
	p.stop(t)
	if strings.Contains(p.stderr.String(), client.SecretAccessKey) {
		t.Fatal("the log contains the SigV4 secret")
	}

	// Run again on the same directory: same credential, same key, same ports.
	// The disabled key does not keep dev from resuming; it says so.
	// (dev deletes a stale client.json itself; the test must not read it first.)
	os.Remove(filepath.Join(dir, "client.json"))
	p = start(t, bin, "dev", "--data", dir)
	again := readClientFile(t, dir, p)
	if !reflect.DeepEqual(again, client) {
		t.Fatalf("second run changed client.json:\n%+v\n%+v", client, again)
	}
	waitFor(t, "the note that the demo key store changed", func() bool {
		return strings.Contains(p.stdout.String(), "InvalidStateException")
	}, p)
	if out, err := cli(t, bin, dir, 0, "key", "enable", client.KeyStore, client.KeyID); err != nil {
		t.Fatalf("key enable: %v\n%s", err, out)
	}
	decrypt(t, clientFrom(t, again, 0), client.KeyID, enc, "survives restarts")
	p.stop(t)

	// serve runs the same node from the node.toml dev wrote, here with the
	// production default of draining before it stops (dev turns it off).
	conf, err := os.ReadFile(filepath.Join(dir, "node1", "node.toml"))
	if err != nil || !bytes.Contains(conf, []byte(`drain_time = "-1s"`)) {
		t.Fatalf("dev's node.toml does not turn draining off: %v\n%s", err, conf)
	}
	drained := filepath.Join(dir, "node1", "drain.toml")
	if err := os.WriteFile(drained, bytes.Replace(conf, []byte(`drain_time = "-1s"`), []byte(`drain_time = "2s"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	p = start(t, bin, "serve", "--config", drained)
	ready := func() int {
		resp, err := http.Get(client.HealthEndpoints[0] + "/ready")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, "serve to be ready", func() bool { return ready() == 200 }, p)
	decrypt(t, clientFrom(t, client, 0), client.KeyID, enc, "survives restarts")
	signalled := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, "/ready to fail while draining", func() bool { return ready() == 503 }, p)
	decrypt(t, clientFrom(t, client, 0), client.KeyID, enc, "survives restarts")
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit after draining: %v\n%s", err, p.stderr.String())
	}
	if took := time.Since(signalled); took < 2*time.Second {
		t.Fatalf("stopped %v after SIGTERM, before its 2s drain", took)
	}
}

// checkBackupCommands: snapshot save writes an authenticated backup that
// inspect verifies; the same file with the demo key enabled by a text
// editor fails inspect (exit status 1) and restore.
func checkBackupCommands(t *testing.T, bin, dir string) {
	t.Helper()
	backup := filepath.Join(dir, "backup.snap")
	if out, err := cli(t, bin, dir, 0, "snapshot", "save", backup); err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	out, err := cli(t, bin, dir, 0, "snapshot", "inspect", backup)
	if err != nil || !strings.Contains(out, "MAC           verified") || !strings.Contains(out, "restorable    yes") || !strings.Contains(out, "keys          2 ") {
		t.Fatalf("snapshot inspect of a fresh backup: %v\n%s", err, out)
	}
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(b, []byte(`"enabled":false`), []byte(`"enabled":true`), 1)
	if bytes.Equal(edited, b) {
		t.Fatalf("the backup holds no disabled key:\n%s", b)
	}
	if err := os.WriteFile(backup, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = cli(t, bin, dir, 0, "snapshot", "inspect", backup)
	if err == nil || !strings.Contains(out, "FAILED: modified, or from another cluster") {
		t.Fatalf("snapshot inspect of an edited backup: %v\n%s", err, out)
	}
	if out, err := cli(t, bin, dir, 0, "snapshot", "restore", backup); err == nil || !strings.Contains(out, "modified") {
		t.Fatalf("snapshot restore of an edited backup: %v\n%s", err, out)
	}
}

func readClientFile(t *testing.T, dir string, p *process) xksclient.ClientFile {
	t.Helper()
	var client xksclient.ClientFile
	if err := json.Unmarshal(waitForFile(t, filepath.Join(dir, "client.json"), p), &client); err != nil {
		t.Fatal(err)
	}
	return client
}

// assertPortsOutsideReservedRange checks dev's saved ports against the
// contract: PORT..PORT+9 belong to the API ports and other tools.
func assertPortsOutsideReservedRange(t *testing.T, dir string, port int) {
	t.Helper()
	var st devenv.State
	b, err := os.ReadFile(filepath.Join(dir, "dev.json"))
	if err != nil || json.Unmarshal(b, &st) != nil {
		t.Fatalf("dev.json: %v", err)
	}
	for i, n := range st.Nodes {
		if n.Listen != "127.0.0.1:"+strconv.Itoa(port+i) {
			t.Fatalf("%s listens on %s", n.ID, n.Listen)
		}
		for _, addr := range []string{n.HealthListen, n.ClusterBind, n.AdminListen} {
			p, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
			if p >= port && p <= port+9 {
				t.Fatalf("%s uses port %d inside the reserved range %d..%d", n.ID, p, port, port+9)
			}
		}
	}
}

func testMetadata(op string) xksclient.RequestMetadata {
	return xksclient.RequestMetadata{AWSPrincipalARN: "arn:aws:iam::1:user/t", KMSKeyARN: "arn:aws:kms:us-east-1:1:key/t", KMSOperation: op, KMSRequestID: "dev-test"}
}

func printedCurl(t *testing.T, stdout string) string {
	t.Helper()
	var cmd strings.Builder
	in := false
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "curl ") {
			in = true
		}
		if !in {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cmd.WriteString(strings.TrimSuffix(line, "\\"))
			continue
		}
		cmd.WriteString(line)
		return cmd.String()
	}
	t.Fatalf("no curl command in the output:\n%s", stdout)
	return ""
}

func clientFrom(t *testing.T, f xksclient.ClientFile, node int) *xksclient.Client {
	t.Helper()
	c, err := f.Client(node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.HTTP.CloseIdleConnections)
	return c
}

func decrypt(t *testing.T, c *xksclient.Client, keyID string, enc *xksclient.EncryptResponse, want string) {
	t.Helper()
	got, err := c.Decrypt(keyID, &xksclient.DecryptRequest{RequestMetadata: testMetadata("Decrypt"), Ciphertext: enc.Ciphertext,
		CiphertextMetadata: enc.CiphertextMetadata, IV: enc.IV, Tag: enc.Tag})
	if err != nil || string(got) != want {
		t.Fatalf("decrypt: %q %v", got, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool, p *process) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// `make run` killed by a signal does not pass it on: with --exit-with-parent
// dev notices that its parent is gone and stops its nodes.
func TestDevExitsWithItsParent(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	listen := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	// The shell stands in for make: dev's parent, killed without a word.
	p := start(t, "/bin/sh", "-c", bin+" dev --exit-with-parent --data "+dir+" --listen "+listen+" & wait")
	readClientFile(t, dir, p)
	pidFile, err := os.ReadFile(filepath.Join(dir, "node1", "pid"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := strconv.Atoi(strings.TrimSpace(string(pidFile)))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(node, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("node process %d still runs 30s after dev's parent died\n%s", node, p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(p.stderr.String(), "the parent process exited") {
		t.Errorf("dev did not say why it stopped:\n%s", p.stderr.String())
	}
}

// checkOperatorCommands: the CLI takes no token on its command line; a
// reader token (from the environment) reads and cannot write; the audit
// trail names who did what and verifies, and a backup whose trail was
// edited fails `audit verify --file` with exit status 4; a revoked token
// opens nothing.
func checkOperatorCommands(t *testing.T, bin, dir, health string) {
	t.Helper()
	if out, err := cli(t, bin, dir, 0, "keystore", "list", "--token", "0123456789abcdef"); err == nil || !strings.Contains(out, "unknown flag: --token") {
		t.Fatalf("the CLI takes a token on its command line: %v\n%s", err, out)
	}
	out, err := cli(t, bin, dir, 0, "token", "create", "rita", "--role", "reader", "--json")
	var rita admin.NewOperator
	if err != nil || json.Unmarshal([]byte(out), &rita) != nil || rita.Token == "" || rita.Role != admin.RoleReader {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	asRita := []string{"XKSPROXY_ADMIN_TOKEN=" + rita.Token}
	if out, err := cliWith(t, bin, dir, 0, asRita, "keystore", "list"); err != nil {
		t.Fatalf("a reader lists key stores: %v\n%s", err, out)
	}
	if out, err := cliWith(t, bin, dir, 0, asRita, "keystore", "disable", "demo"); err == nil || !strings.Contains(out, "HTTP 403") {
		t.Fatalf("a reader disables a key store: %v\n%s", err, out)
	}
	if out, err := cli(t, bin, dir, 0, "token", "list"); err != nil || !strings.Contains(out, "rita") || strings.Contains(out, rita.Token) {
		t.Fatalf("token list: %v\n%s", err, out)
	}
	out, err = cli(t, bin, dir, 0, "audit", "list", "--json")
	var trail admin.AuditTrail
	if err != nil || json.Unmarshal([]byte(out), &trail) != nil || len(trail.Records) == 0 {
		t.Fatalf("audit list: %v\n%s", err, out)
	}
	if last := trail.Records[len(trail.Records)-1]; last.Action != "CreateOperator" || last.Actor.Name != "bootstrap" || last.Actor.Node != "node1" || last.Outcome != "applied" {
		t.Fatalf("the last audit record: %+v", last)
	}
	if strings.Contains(out, rita.Token) {
		t.Fatal("the audit trail holds a token")
	}
	if out, err := cli(t, bin, dir, 0, "audit", "verify"); err != nil || !strings.Contains(out, "verifies") {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	backup := filepath.Join(dir, "audited.snap")
	if out, err := cli(t, bin, dir, 0, "snapshot", "save", backup); err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	if out, err := cli(t, bin, dir, 0, "audit", "verify", "--file", backup); err != nil {
		t.Fatalf("audit verify --file of a fresh backup: %v\n%s", err, out)
	}
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	// Rita's record, made to say she was created an admin.
	edited := bytes.Replace(b, []byte(`"role":"reader"}`), []byte(`"role":"admin"}`), 1)
	if bytes.Equal(edited, b) {
		t.Fatalf("the backup holds no record of rita's creation:\n%s", b)
	}
	if err := os.WriteFile(backup, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = cli(t, bin, dir, 0, "audit", "verify", "--file", backup)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 4 || !strings.Contains(out, "edited") {
		t.Fatalf("audit verify --file of an edited backup: %v\n%s", err, out)
	}
	if out, err := cli(t, bin, dir, 0, "token", "revoke", "rita"); err != nil {
		t.Fatalf("token revoke: %v\n%s", err, out)
	}
	if out, err := cliWith(t, bin, dir, 0, asRita, "keystore", "list"); err == nil || !strings.Contains(out, "HTTP 401") {
		t.Fatalf("a revoked token lists key stores: %v\n%s", err, out)
	}
	_, m := testmetrics.Scrape(t, health+"/metrics")
	for reason, least := range map[string]float64{"role": 1, "unauthenticated": 1} {
		if got := m.Value(t, "xksproxy_admin_refused_total", "reason", reason); got < least {
			t.Errorf("xksproxy_admin_refused_total{reason=%q} = %v, want at least %v", reason, got, least)
		}
	}
}
