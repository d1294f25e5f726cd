package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/internal/testmetrics"
	"github.com/xksproxy/xksproxy/xksclient"
)

// cli runs the xksproxy CLI with node i's admin.env exported.
func cli(t *testing.T, bin, dir string, node int, args ...string) (string, error) {
	t.Helper()
	return cliWith(t, bin, dir, node, nil, args...)
}

// cliWith is cli with more environment variables, set after admin.env's.
func cliWith(t *testing.T, bin, dir string, node int, extraEnv []string, args ...string) (string, error) {
	t.Helper()
	env, err := os.ReadFile(filepath.Join(dir, "node"+strconv.Itoa(node+1), "admin.env"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	for _, line := range strings.Split(string(env), "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cliOutputs is cli with stdout and stderr apart.
func cliOutputs(t *testing.T, bin, dir string, node int, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	env, err := os.ReadFile(filepath.Join(dir, "node"+strconv.Itoa(node+1), "admin.env"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	for _, line := range strings.Split(string(env), "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func clusterStatus(t *testing.T, bin, dir string, node int) (admin.ClusterStatus, error) {
	t.Helper()
	out, err := cli(t, bin, dir, node, "cluster", "status", "--json")
	var st admin.ClusterStatus
	if err == nil {
		err = json.Unmarshal([]byte(out), &st)
	}
	return st, err
}

func readPID(t *testing.T, dir string, node int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "node"+strconv.Itoa(node+1), "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// A cluster in three commands, as the README shows it: dev --nodes 3, the
// CLI's kill switch, SIGKILL of the leader, a restart from the data
// directory, and a full stop and start.
func TestThreeProcessCluster(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	port := freeLoopbackPort(t)
	p := start(t, bin, "dev", "--nodes", "3", "--data", dir, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	client := readClientFile(t, dir, p)
	if len(client.Endpoints) != 3 || client.Endpoint != client.Endpoints[0] {
		t.Fatalf("client.json endpoints: %+v", client.Endpoints)
	}
	for i, want := range []int{port, port + 1, port + 2} {
		if client.Endpoints[i] != "https://127.0.0.1:"+strconv.Itoa(want) {
			t.Fatalf("endpoint %d is %s", i, client.Endpoints[i])
		}
		readPID(t, dir, i)
	}
	assertPortsOutsideReservedRange(t, dir, port)

	enc, err := clientFrom(t, client, 0).Encrypt(client.KeyID, &xksclient.EncryptRequest{RequestMetadata: testMetadata("Encrypt"), Plaintext: []byte("three nodes")})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		decrypt(t, clientFrom(t, client, i), client.KeyID, enc, "three nodes")
	}

	// The kill switch through the CLI on node 2.
	out, err := cli(t, bin, dir, 1, "key", "disable", client.KeyStore, client.KeyID)
	if err != nil || !strings.Contains(out, "on 3/3 nodes") {
		t.Fatalf("key disable: %v\n%s", err, out)
	}
	t.Logf("CLI: %s", strings.SplitN(out, "\n", 2)[0])
	for i := range 3 {
		_, err := clientFrom(t, client, i).Encrypt(client.KeyID, &xksclient.EncryptRequest{RequestMetadata: testMetadata("Encrypt"), Plaintext: []byte("x")})
		if xe, ok := err.(*xksclient.Error); !ok || xe.Name != "InvalidStateException" {
			t.Fatalf("node %d after disable: %v", i+1, err)
		}
	}
	if out, err := cli(t, bin, dir, 2, "key", "enable", client.KeyStore, client.KeyID); err != nil {
		t.Fatalf("key enable: %v\n%s", err, out)
	}

	// A stale read: --json's stdout is the API's JSON alone; stderr says
	// how current the node was.
	stdout, stderr, err := cliOutputs(t, bin, dir, 2, "key", "list", client.KeyStore, "--stale", "--json")
	var keys []admin.KeyInfo
	if err != nil || json.Unmarshal([]byte(stdout), &keys) != nil || len(keys) == 0 {
		t.Fatalf("key list --stale --json: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "stale read: the node's applied index is ") || !strings.Contains(stderr, "its last contact with the leader") {
		t.Fatalf("key list --stale says nothing of the node's freshness on stderr:\n%s", stderr)
	}
	t.Logf("CLI --stale: %s", strings.TrimSpace(stderr))
	if _, stderr, err := cliOutputs(t, bin, dir, 2, "key", "list", client.KeyStore); err != nil || stderr != "" {
		t.Fatalf("key list without --stale: %v, stderr %q", err, stderr)
	}

	// SIGKILL the leader.
	st, err := clusterStatus(t, bin, dir, 0)
	if err != nil || st.Leader == nil {
		t.Fatalf("cluster status: %+v %v", st, err)
	}
	leader := -1
	for i, ep := range client.Endpoints {
		if ep == "https://"+st.Leader.APIAddress {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("leader %+v is none of %v", st.Leader, client.Endpoints)
	}
	// Every node's metrics name the same leader and count the whole fleet.
	for i, ep := range client.HealthEndpoints {
		waitFor(t, "node "+strconv.Itoa(i+1)+" to see the fleet of 3", func() bool {
			_, m := testmetrics.Scrape(t, ep+"/metrics")
			return m.Value(t, "xksproxy_cluster_fleet_members") == 3
		}, p)
		_, m := testmetrics.Scrape(t, ep+"/metrics")
		if got := m.Value(t, "xksproxy_cluster_is_leader"); got != 0 && i != leader || got != 1 && i == leader {
			t.Errorf("node %d: is_leader %v, leader is node %d", i+1, got, leader+1)
		}
		if m.Value(t, "xksproxy_cluster_leader_known") != 1 || m.Value(t, "xksproxy_cluster_leader_contact_age_seconds") > 5 {
			t.Errorf("node %d does not hear from the leader", i+1)
		}
		if age := m.Value(t, "xksproxy_cluster_state_age_seconds"); age < 0 || age > 5 {
			t.Errorf("node %d: state age %v s: not current with the leader", i+1, age)
		}
		if m.Value(t, "xksproxy_cluster_command_set") != fsm.CommandSet {
			t.Errorf("node %d: the cluster's command set is not this build's", i+1)
		}
	}
	survivor := (leader + 1) % 3
	if err := syscall.Kill(readPID(t, dir, leader), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	waitFor(t, "a new leader", func() bool {
		st, err := clusterStatus(t, bin, dir, survivor)
		return err == nil && st.Leader != nil && st.Leader.APIAddress != client.Endpoints[leader][len("https://"):]
	}, p)
	t.Logf("new leader after %v", time.Since(killedAt))
	// Committed, but the dead node cannot confirm: exit status 3 (README,
	// The operator CLI), naming the node, why, and when it stops serving by
	// itself.
	dead := "node" + strconv.Itoa(leader+1)
	var exit *exec.ExitError
	notConfirmed := func(what string, args ...string) {
		t.Helper()
		start := time.Now()
		out, err := cli(t, bin, dir, survivor, args...)
		// A node that refuses the connection is reported at once, not
		// after the 5 s confirmation timeout (the issue asks for well
		// under a second; this allows for -race and a busy machine).
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("%s with %s dead took %v", what, dead, took)
		} else {
			t.Logf("%s with %s dead: exit status 3 after %v", what, dead, took.Round(time.Millisecond))
		}
		if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(out, dead) || !strings.Contains(out, "stops serving by itself by") {
			t.Fatalf("%s with %s dead: %v (want exit status 3 naming it)\n%s", what, dead, err, out)
		}
	}
	notConfirmed("key create", "key", "create", client.KeyStore, "after-kill")
	notConfirmed("key disable", "key", "disable", client.KeyStore, "after-kill")
	if out, err := cli(t, bin, dir, survivor, "key", "disable", "no-such-store", "k"); !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("a change that was not committed: %v (want exit status 1)\n%s", err, out)
	}
	notConfirmed("key enable", "key", "enable", client.KeyStore, "after-kill")
	for i := range 3 {
		if i != leader {
			decrypt(t, clientFrom(t, client, i), client.KeyID, enc, "three nodes")
		}
	}

	// The killed node restarts from its data directory and catches up.
	restarted := start(t, bin, "serve", "--config", filepath.Join(dir, "node"+strconv.Itoa(leader+1), "node.toml"))
	waitFor(t, "the restarted node to catch up", func() bool {
		c := clientFrom(t, client, leader)
		_, err := c.Metadata("after-kill", testMetadata("DescribeKey"))
		return err == nil
	}, restarted)
	decrypt(t, clientFrom(t, client, leader), client.KeyID, enc, "three nodes")

	// Full stop and start: nothing committed is lost.
	restarted.stop(t)
	p.stop(t)
	os.Remove(filepath.Join(dir, "client.json"))
	// Without --nodes, dev runs every node the directory holds.
	p = start(t, bin, "dev", "--data", dir)
	client = readClientFile(t, dir, p)
	for i := range 3 {
		c := clientFrom(t, client, i)
		if _, err := c.Metadata("after-kill", testMetadata("DescribeKey")); err != nil {
			t.Fatalf("node %d lost the key created before the full restart: %v", i+1, err)
		}
		decrypt(t, c, client.KeyID, enc, "three nodes")
	}
	p.stop(t)

	// dev does not drop nodes, which would leave voters the cluster waits for.
	shrink, err := exec.Command(bin, "dev", "--data", dir, "--nodes", "2").CombinedOutput()
	if err == nil || !strings.Contains(string(shrink), "holds 3 nodes") {
		t.Fatalf("dev --nodes 2 on a three-node directory: %v\n%s", err, shrink)
	}
}
