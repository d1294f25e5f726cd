package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/devenv"
	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/node"
)

// TestSIGHUPSwapsCertificatesUnderLoad replaces a running serve process's
// certificate files and sends it SIGHUP, as an operator renewing a
// certificate would, while signed requests keep arriving: a new connection
// to the XKS and to the admin listener gets the new certificate, a
// keep-alive connection opened before goes on working with the old one, no
// request fails, a broken file is refused with a log line while the node
// serves on, and the log level follows the file.
func TestSIGHUPSwapsCertificatesUnderLoad(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	listen := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	p := start(t, bin, "dev", "--data", dir, "--listen", listen)
	clientFile := readClientFile(t, dir, p)
	var st devenv.State
	if b, err := os.ReadFile(filepath.Join(dir, "dev.json")); err != nil || json.Unmarshal(b, &st) != nil {
		t.Fatalf("dev.json: %v", err)
	}
	pidText, err := os.ReadFile(filepath.Join(dir, "node1", "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(clientFile.CACertFile)
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("the dev CA: %v", err)
	}
	served := func(addr string) string { // the serial a new connection is shown
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
		if err != nil {
			t.Fatalf("a new TLS connection to %s: %v", addr, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	oldAPI, oldAdmin := served(listen), served(st.Nodes[0].AdminListen)

	// A keep-alive connection opened before the swap.
	kept, err := clientFile.Client(0)
	if err != nil {
		t.Fatal(err)
	}
	kept.HTTP.Transport.(*http.Transport).MaxConnsPerHost = 1
	var keptConn atomic.Pointer[net.Conn]
	kept.HTTP.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil && !keptConn.CompareAndSwap(nil, &c) {
			t.Errorf("the keep-alive client opened a second connection")
		}
		return c, err
	}
	if err := kept.RoundTrip(clientFile.KeyID, testMetadata("Encrypt"), []byte("before"), nil); err != nil {
		t.Fatal(err)
	}

	// Bounded load through the swap: every request must succeed.
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		load, err := clientFile.Client(0)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(60 * time.Second)
			for i := 0; i < 5000 && time.Now().Before(deadline); i++ {
				select {
				case <-stop:
					return
				default:
				}
				if i%10 == 0 { // new connections too, not only kept ones
					load.HTTP.Transport.(*http.Transport).CloseIdleConnections()
				}
				sent.Add(1)
				if err := load.RoundTrip(clientFile.KeyID, testMetadata("Encrypt"), []byte("load "+strconv.Itoa(w)), nil); err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)

	ca, err := devenv.LoadOrCreateCA(filepath.Join(dir, "tls"), "")
	if err != nil {
		t.Fatal(err)
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	// A new certificate and key, made by issue in a fresh directory and
	// renamed over the old files.
	renew := func(certFile, keyFile string, issue func(cert, key string) error) {
		t.Helper()
		fresh := t.TempDir()
		if err := issue(filepath.Join(fresh, "cert"), filepath.Join(fresh, "key")); err != nil {
			t.Fatal(err)
		}
		if os.Rename(filepath.Join(fresh, "key"), keyFile) != nil || os.Rename(filepath.Join(fresh, "cert"), certFile) != nil {
			t.Fatal("renaming the new certificate into place")
		}
	}
	renew(filepath.Join(dir, "tls", "server.pem"), filepath.Join(dir, "tls", "server-key.pem"), func(cert, key string) error {
		return ca.Issue(cert, key, "localhost", []string{"localhost"}, loopback)
	})
	// The cluster certificate must name its node (serve --check refuses one that does not).
	renew(filepath.Join(dir, "node1", "cluster.pem"), filepath.Join(dir, "node1", "cluster-key.pem"), func(cert, key string) error {
		_, err := node.IssueNodeCertificate(filepath.Join(dir, "tls"), node.NodeCertificate{NodeID: st.Nodes[0].ID,
			IPs: loopback, DNSNames: []string{"localhost"}, CertPath: cert, KeyPath: key})
		return err
	})
	node1Config := filepath.Join(dir, "node1", "node.toml")
	configText, err := os.ReadFile(node1Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, zero := range []string{"= 0\n", `= ""`, "0001-01-01", `"0s"`, "[log]"} {
		if strings.Contains(string(configText), zero) {
			t.Errorf("dev wrote a setting at its default (%q) into %s:\n%s", zero, node1Config, configText)
		}
	}
	if err := os.WriteFile(node1Config, append(configText, "\n[log]\nlevel = \"debug\"\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	// What an operator runs before the reload: the new files pass.
	if out, err := exec.Command(bin, "serve", "--check", "--config", node1Config).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "ok    HSM login") || !strings.Contains(string(out), "ready to serve") {
		t.Fatalf("serve --check beside the running node: %v\n%s", err, out)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, p, `"reloaded on SIGHUP"`)
	newAPI, newAdmin := served(listen), served(st.Nodes[0].AdminListen)
	if newAPI == oldAPI || newAdmin == oldAdmin {
		t.Fatalf("after SIGHUP a new connection still gets the old certificate: api %s → %s, admin %s → %s", oldAPI, newAPI, oldAdmin, newAdmin)
	}
	if !strings.Contains(p.stderr.String(), `"from":"info","to":"debug"`) {
		t.Errorf("no log line for the log level change:\n%s", p.stderr.String())
	}
	if strings.Contains(p.stderr.String(), "take effect at the next start") {
		t.Errorf("a reload of reloadable settings warned of a restart:\n%s", p.stderr.String())
	}

	// A broken certificate file is refused; the node keeps the current one.
	if err := os.WriteFile(filepath.Join(dir, "tls", "server.pem"), []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, p, "keeping the current XKS listener certificate")
	out, err := exec.Command(bin, "serve", "--check", "--config", node1Config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL  api TLS") {
		t.Errorf("serve --check with a broken certificate file: %v\n%s", err, out)
	}
	if got := served(listen); got != newAPI {
		t.Fatalf("after a refused reload a new connection got certificate %s, want %s", got, newAPI)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	if err := kept.RoundTrip(clientFile.KeyID, testMetadata("Encrypt"), []byte("after"), nil); err != nil {
		t.Fatalf("the keep-alive connection from before the swap: %v", err)
	}
	resp, err := kept.HTTP.Get(clientFile.Endpoints[0] + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.TLS.PeerCertificates[0].SerialNumber.String(); got != oldAPI {
		t.Fatalf("the kept connection shows certificate %s: it was not the connection from before the swap (%s)", got, oldAPI)
	}
	t.Log(grepLines(p.stderr.String(), "reload"))
	t.Logf("%d signed request pairs through two reloads, %d failed", sent.Load(), failed.Load())
	if failed.Load() != 0 || sent.Load() < 10 {
		t.Fatalf("%d of %d requests failed during the swap (first: %v)", failed.Load(), sent.Load(), firstFailure.Load())
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the node is gone after SIGHUP: %v", err)
	}
	p.stop(t)
}

func waitForLog(t *testing.T, p *process, s string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the log:\n%s", s, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
