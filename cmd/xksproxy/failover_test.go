package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/devenv"
	"github.com/xksproxy/xksproxy/hsm/netsim"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
	"github.com/xksproxy/xksproxy/internal/testmetrics"
	"github.com/xksproxy/xksproxy/xksclient"
)

// TestTwoHSMFailover runs one node on two HSMs ([[hsm]]: two SoftHSMv2
// tokens behind the simulated network HSM) under signed encrypt+decrypt
// round trips over TLS. HSM A hangs, then (second subtest) fails with a
// device error: no request fails (the calls in flight on A are retried on
// B), GetHealthStatus lists both HSMs with A not ACTIVE, the metrics show A
// out of rotation; once healed, A rejoins and serves again.
func TestTwoHSMFailover(t *testing.T) {
	netsimLib := filepath.Join(t.TempDir(), netsim.LibraryName)
	if err := netsim.Build(netsimLib); errors.Is(err, netsim.ErrNoCompiler) {
		fmt.Fprintf(os.Stderr, "\n*** %s SKIPPED: %v ***\n\n", t.Name(), err)
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	p := start(t, bin, "dev", "--data", dir, "--listen", "127.0.0.1:"+strconv.Itoa(freeLoopbackPort(t)))
	clientFile := readClientFile(t, dir, p)
	p.stop(t)
	var st devenv.State
	if b, err := os.ReadFile(filepath.Join(dir, "dev.json")); err != nil || json.Unmarshal(b, &st) != nil {
		t.Fatalf("dev.json: %v", err)
	}
	nodeDir := filepath.Join(dir, "node1")
	hsmA, hsmB := st.Nodes[0].TokenLabel, st.Nodes[0].TokenLabel+"-b"

	// B: a second token beside dev's in the same token directory. The node
	// imports the cluster keys into it (import_keys_file) and unwraps the
	// replicated demo key into it as it starts.
	// Through PKCS#11 in this process, not softhsm2-util, whose command
	// line would carry the PINs.
	softhsmConf := filepath.Join(nodeDir, "softhsm2.conf")
	pin, soPIN := readTrimmed(t, filepath.Join(dir, "secrets", "hsm-pin")), readTrimmed(t, filepath.Join(dir, "secrets", "hsm-so-pin"))
	module, err := softhsm.ModulePath()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", softhsmConf)
	if err := softhsm.InitToken(module, hsmB, soPIN, pin); err != nil {
		t.Fatal(err)
	}
	material, err := os.ReadFile(filepath.Join(dir, "secrets", "cluster-keys"))
	if err != nil || os.WriteFile(filepath.Join(nodeDir, "cluster-keys.import"), material, 0o600) != nil {
		t.Fatalf("staging the cluster keys: %v", err)
	}

	netsimConf := filepath.Join(dir, "netsim.conf")
	setNetsim := func(c netsim.Config) {
		t.Helper()
		c.Module, c.Latency, c.CheckInterval = module, time.Millisecond, 2*time.Millisecond
		if err := c.Write(netsimConf); err != nil {
			t.Fatal(err)
		}
	}
	setNetsim(netsim.Config{})
	config := filepath.Join(dir, "failover.toml")
	writeTwoHSMConfig(t, filepath.Join(nodeDir, "node.toml"), config, netsimLib, softhsmConf, netsimConf,
		filepath.Join(dir, "secrets", "hsm-pin"), hsmA, hsmB)

	out, err := exec.Command(bin, "serve", "--check", "--config", config).CombinedOutput()
	if want := "tokens " + hsmA + ", " + hsmB; err != nil || !strings.Contains(string(out), want) {
		t.Fatalf("serve --check on two HSMs does not name both (%q): %v\n%s", want, err, out)
	}
	node := start(t, bin, "serve", "--config", config)
	health := "http://" + st.Nodes[0].HealthListen
	waitFor(t, "the node on two HSMs to be ready", func() bool {
		resp, err := http.Get(health + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, node)
	metric := func(name, hsm string) float64 {
		t.Helper()
		_, m := testmetrics.Scrape(t, health+"/metrics")
		return m.Value(t, name, "hsm", hsm)
	}
	c := clientFrom(t, clientFile, 0)
	fleet := func() map[string]string {
		t.Helper()
		h, err := c.Health(testMetadata("GetHealthStatus"))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, m := range h.Fleet {
			out[m.ID] = m.HealthStatus
		}
		return out
	}
	idA, idB := st.Nodes[0].ID+"/"+hsmA, st.Nodes[0].ID+"/"+hsmB
	if f := fleet(); len(f) != 2 || f[idA] != "ACTIVE" || f[idB] != "ACTIVE" {
		t.Fatalf("GetHealthStatus of a healthy node on two HSMs lists %v, want %s and %s ACTIVE", f, idA, idB)
	}

	for _, fault := range []netsim.Fault{netsim.FaultHang, netsim.FaultError} {
		t.Run(string(fault), func(t *testing.T) {
			stop := roundTripLoad(t, clientFile)
			servedA, servedB := metric("xksproxy_hsm_served_total", hsmA), metric("xksproxy_hsm_served_total", hsmB)
			waitFor(t, "both HSMs to serve", func() bool {
				return metric("xksproxy_hsm_served_total", hsmA) > servedA+20 && metric("xksproxy_hsm_served_total", hsmB) > servedB+20
			}, node)

			setNetsim(netsim.Config{Fault: fault, FaultToken: hsmA})
			waitFor(t, "A to leave the rotation", func() bool { return metric("xksproxy_hsm_in_rotation", hsmA) == 0 }, node)
			if metric("xksproxy_hsm_in_rotation", hsmB) != 1 {
				t.Error("B left the rotation with A")
			}
			servedB = metric("xksproxy_hsm_served_total", hsmB)
			waitFor(t, "B to carry the load", func() bool { return metric("xksproxy_hsm_served_total", hsmB) > servedB+50 }, node)
			waitFor(t, "GetHealthStatus to report A unhealthy", func() bool {
				f := fleet()
				return len(f) == 2 && f[idA] != "ACTIVE" && f[idA] != "" && f[idB] == "ACTIVE"
			}, node)

			setNetsim(netsim.Config{})
			waitFor(t, "A to rejoin the rotation", func() bool { return metric("xksproxy_hsm_in_rotation", hsmA) == 1 }, node)
			servedA = metric("xksproxy_hsm_served_total", hsmA)
			waitFor(t, "A to serve again", func() bool { return metric("xksproxy_hsm_served_total", hsmA) > servedA+20 }, node)
			waitFor(t, "GetHealthStatus to report A ACTIVE again", func() bool { return fleet()[idA] == "ACTIVE" }, node)

			sent, failed, firstErr := stop()
			t.Logf("%d signed round trips; served by A %v, by B %v", sent,
				metric("xksproxy_hsm_served_total", hsmA), metric("xksproxy_hsm_served_total", hsmB))
			if failed != 0 || sent < 100 {
				t.Fatalf("%d of %d round trips failed (first: %v)", failed, sent, firstErr)
			}
		})
	}
	node.stop(t)
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// writeTwoHSMConfig copies the node.toml dev wrote to out with its [hsm]
// table replaced by two [[hsm]] entries on the simulated network HSM, one
// per token. A short health_interval caps the recovery back-off, so that a
// healed HSM rejoins within about a second.
func writeTwoHSMConfig(t *testing.T, in, out, netsimLib, softhsmConf, netsimConf, pinFile string, tokens ...string) {
	t.Helper()
	b, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	inHSM := false
	for _, line := range strings.Split(string(b), "\n") {
		if header := strings.TrimSpace(line); strings.HasPrefix(header, "[") {
			inHSM = header == "[hsm]" || header == "[hsm.env]"
		}
		if !inHSM {
			kept = append(kept, line)
		}
	}
	if len(kept) == len(strings.Split(string(b), "\n")) {
		t.Fatalf("no [hsm] table in %s", in)
	}
	text := strings.Join(kept, "\n")
	for _, token := range tokens {
		text += fmt.Sprintf("\n[[hsm]]\nmodule = %q\ntoken_label = %q\npin_file = %q\npool_size = 4\nhealth_interval = \"1s\"\n"+
			"[hsm.env]\nSOFTHSM2_CONF = %q\n%s = %q\n", netsimLib, token, pinFile, softhsmConf, netsim.ConfigEnv, netsimConf)
	}
	if err := os.WriteFile(out, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// roundTripLoad sends signed encrypt+decrypt round trips from three
// goroutines, each on its own connections, until stop is called: at most
// 20,000 in all and 60 s.
func roundTripLoad(t *testing.T, f xksclient.ClientFile) (stop func() (sent, failed int64, firstErr error)) {
	t.Helper()
	var sentN, failedN atomic.Int64
	var first atomic.Pointer[error]
	var quit atomic.Bool
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	for w := range 3 {
		c := clientFrom(t, f, 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			plaintext := []byte("failover " + strconv.Itoa(w))
			for n := 0; n < 20000/3 && !quit.Load() && time.Now().Before(deadline); n++ {
				sentN.Add(1)
				if err := c.RoundTrip(f.KeyID, testMetadata("Encrypt"), plaintext, []byte("aad")); err != nil {
					failedN.Add(1)
					first.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	return func() (int64, int64, error) {
		quit.Store(true)
		wg.Wait()
		var err error
		if p := first.Load(); p != nil {
			err = *p
		}
		return sentN.Load(), failedN.Load(), err
	}
}
