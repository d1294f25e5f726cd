package faults

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/xksclient"
)

// oldBuild is the build the rolling upgrade starts from: the last commit of
// main before issue 13's work (the version every node advertises, and a
// leader that proposes only commands every voter knows). Its nodes report no
// version and know no command set, so it is the oldest build an operator
// will upgrade from into that mechanism; move it forward when the command
// set next changes.
const oldBuild = "01b5f8d"

// oldBinary builds oldBuild's ./cmd/xksproxy from this clone's history, and
// skips the test where that history is missing (a shallow clone, an
// exported tree). The Go build cache keeps it cheap after the first time:
// only the packages of ours that differ are compiled.
func oldBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skipf("building the old build %s needs git: %v", oldBuild, err)
	}
	if _, err := sh(10*time.Second, "git", "cat-file", "-e", oldBuild+"^{commit}"); err != nil {
		shallow, _ := sh(10*time.Second, "git", "rev-parse", "--is-shallow-repository")
		t.Skipf("the old build's commit %s is not in this clone's history (shallow: %s): %v", oldBuild, strings.TrimSpace(shallow), err)
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "src"), filepath.Join(dir, "xksproxy-"+oldBuild)
	if err := os.Mkdir(src, 0o700); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	archive := filepath.Join(dir, "src.tar")
	// From the top of the clone: in a subdirectory, git archive takes only
	// that directory, which oldBuild may not even have.
	top := strings.TrimSpace(must(t, "git", "rev-parse", "--show-toplevel"))
	must(t, "git", "-C", top, "archive", "--format=tar", "-o", archive, oldBuild)
	must(t, "tar", "-xf", archive, "-C", src)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/xksproxy")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/xksproxy at %s: %v: %s", oldBuild, err, out)
	}
	t.Logf("built %s in %s", oldBuild, time.Since(start).Round(100*time.Millisecond))
	return bin
}

// balancer is the load balancer in front of the fleet: it sends traffic
// only to the nodes whose /ready answered 200 at its last check.
type balancer struct {
	nodes []*node
	mu    sync.Mutex
	up    map[*node]bool
	next  int
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func startBalancer(nodes []*node, every time.Duration, limit time.Duration) *balancer {
	b := &balancer{nodes: nodes, up: map[*node]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	check := func() {
		for _, n := range nodes {
			ok, _ := n.ready()
			b.mu.Lock()
			b.up[n] = ok
			b.mu.Unlock()
		}
	}
	check()
	go func() {
		defer close(b.done)
		for range int(limit / every) {
			select {
			case <-b.stop:
				return
			case <-time.After(every):
			}
			check()
		}
	}()
	return b
}

// pick is the next node in turn that is up, other than avoid; nil if none.
func (b *balancer) pick(avoid *node) *node {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range b.nodes {
		b.next = (b.next + 1) % len(b.nodes)
		if n := b.nodes[b.next]; b.up[n] && n != avoid {
			return n
		}
	}
	return nil
}

func (b *balancer) finish() {
	b.once.Do(func() {
		close(b.stop)
		<-b.done
	})
}

// traffic is AWS KMS calling through the balancer: encrypts and decrypts of
// earlier ciphertexts, alternately, from a few workers at a fixed pace. An
// answer KMS retries (outcome.retryable) is retried once on another node;
// only what fails after that is a failed request.
type traffic struct {
	lb       *balancer
	phase    atomic.Value
	stop     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	kept     []written
	requests int
	retried  int
	failed   int
	first    tally    // the first attempts' answers other than 200, "phase node answer"
	failures []string // the first failed requests, for the verdict
}

func startTraffic(lb *balancer, workers int, every time.Duration, maxPerWorker int) *traffic {
	tr := &traffic{lb: lb, stop: make(chan struct{}), first: tally{}}
	tr.phase.Store("old")
	for w := range workers {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for i := range maxPerWorker {
				select {
				case <-tr.stop:
					return
				case <-time.After(every):
				}
				tr.one(fmt.Appendf(nil, "upgrade-%d-%d", w, i), i%2 == 1)
			}
		}()
	}
	return tr
}

// one sends an encrypt of plaintext, or (decrypt, once there is one) a
// decrypt of an earlier ciphertext, and records how it ended.
func (tr *traffic) one(plaintext []byte, decrypt bool) {
	var wr written
	tr.mu.Lock()
	if decrypt && len(tr.kept) > 0 {
		wr = tr.kept[rand.IntN(len(tr.kept))]
	}
	tr.requests++
	tr.mu.Unlock()
	op := "encrypt"
	if wr.ct != nil {
		op = "decrypt"
	}
	attempt := func(n *node) (outcome, string) {
		if wr.ct != nil {
			got, err := n.client().Decrypt(keyID, &xksclient.DecryptRequest{RequestMetadata: md("Decrypt"),
				Ciphertext: wr.ct.Ciphertext, CiphertextMetadata: wr.ct.CiphertextMetadata, IV: wr.ct.IV, Tag: wr.ct.Tag})
			if err == nil && !bytes.Equal(got, wr.plaintext) {
				return outcome{status: 200}, "decrypted to other bytes than were encrypted"
			}
			return classify(err), ""
		}
		ct, o := n.encrypt(plaintext)
		if o.status == 200 {
			tr.mu.Lock()
			tr.kept = append(tr.kept, written{plaintext, ct})
			tr.mu.Unlock()
		}
		return o, ""
	}
	phase := tr.phase.Load().(string)
	fail := func(why string) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		tr.failed++
		if len(tr.failures) < 5 {
			tr.failures = append(tr.failures, fmt.Sprintf("%s %s %s", phase, op, why))
		}
	}
	n := tr.lb.pick(nil)
	if n == nil {
		fail("no node ready")
		return
	}
	o, wrong := attempt(n)
	if wrong != "" {
		fail(n.id + ": " + wrong)
		return
	}
	if o.status == 200 {
		return
	}
	tr.mu.Lock()
	tr.first[phase+" "+n.id+" "+o.String()]++
	tr.mu.Unlock()
	if !o.retryable() {
		fail(fmt.Sprintf("%s: %v", n.id, o.err))
		return
	}
	m := tr.lb.pick(n)
	if m == nil {
		fail(fmt.Sprintf("%s: %v, and no other node ready to retry on", n.id, o.err))
		return
	}
	if o2, wrong := attempt(m); o2.status != 200 || wrong != "" {
		fail(fmt.Sprintf("%s: %v; retried on %s: %v %s", n.id, o.err, m.id, o2.err, wrong))
		return
	}
	tr.mu.Lock()
	tr.retried++
	tr.mu.Unlock()
}

func (tr *traffic) finish() {
	tr.once.Do(func() {
		close(tr.stop)
		tr.wg.Wait()
	})
}

// stop sends SIGTERM, as systemd stops the service, and waits for the node
// to drain and exit; it returns how long that took.
func (n *node) stop(limit time.Duration) time.Duration {
	start := time.Now()
	if err := n.proc.Signal(syscall.SIGTERM); err != nil {
		n.f.t.Fatalf("SIGTERM to %s: %v", n.id, err)
	}
	select {
	case <-n.done:
	case <-time.After(limit):
		n.f.t.Fatalf("%s still running %s after SIGTERM\n%s", n.id, limit, tail(n.logPath, 30))
	}
	if n.exit != nil {
		n.f.t.Errorf("%s exited after SIGTERM with %v\n%s", n.id, n.exit, tail(n.logPath, 30))
	}
	n.proc = nil
	return time.Since(start)
}

// warnings counts the node's log lines at warn and above by level and
// message, after the first skip lines.
func (n *node) warnings(skip int) tally {
	out := tally{}
	fh, err := os.Open(n.logPath)
	if err != nil {
		out[err.Error()]++
		return out
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for i := 0; sc.Scan(); i++ {
		var line struct {
			Level   string `json:"level"`
			Message string `json:"message"`
		}
		if i < skip || json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if line.Level == "warn" || line.Level == "error" || line.Level == "fatal" || line.Level == "panic" {
			out[line.Level+": "+line.Message]++
		}
	}
	return out
}

func lineCount(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\n"))
}

// Item 7 of issue 13: a three-node cluster on oldBuild is upgraded to this
// build one node at a time, followers first and the leader last, each
// stopped with SIGTERM (it drains) and started on the new binary with the
// same data directory and configuration, while AWS KMS's traffic goes on
// through a load balancer that follows /ready, and admin changes are made.
// No request may fail (after the one retry KMS makes); every acknowledged
// change and every ciphertext must be on every node at the end. It needs no
// root: the nodes run on loopback.
func TestRollingUpgrade(t *testing.T) {
	rollingUpgrade(t, "rolling-upgrade", 2)
}

// The same with the leader upgraded second: the election that follows picks
// one of the other two, and when it is the upgraded one, a new leader leads
// a follower still on the old build — the mix in which an upgraded leader
// could propose what the old build cannot decode. Followers first avoids
// it, but a leader may fail over at any time during an upgrade.
func TestRollingUpgradeLeaderSecond(t *testing.T) {
	if !full() {
		t.Skip("full run only (make faults)")
	}
	rollingUpgrade(t, "rolling-upgrade-leader-second", 1)
}

// rollingUpgrade upgrades the leader at step leaderAt (from 0), the others
// before and after it.
func rollingUpgrade(t *testing.T, scenario string, leaderAt int) {
	requireLoopback(t)
	old, cur := oldBinary(t), xksproxyBinary(t)
	const drain = 2 * time.Second
	testStart := time.Now()
	sites := loopbackSites(t)
	f := prepareFleet(t, sites, old, 2*time.Minute, func(s *site, dir string) string {
		return loopbackConfig(t, s, sites, dir, 2*time.Minute, drain)
	})
	f.boot()
	var figs figures
	figs.add("boot", "%s", ms(time.Since(testStart)))
	logStart := map[*node]int{}
	for _, n := range f.nodes {
		logStart[n] = lineCount(n.logPath)
	}

	lb := startBalancer(f.nodes, 200*time.Millisecond, 5*time.Minute)
	t.Cleanup(lb.finish)
	// Four workers at 15 requests/s each: 60 requests/s through the fleet.
	tr := startTraffic(lb, 4, 66*time.Millisecond, 5000)
	t.Cleanup(tr.finish)
	w := f.writeAdmin("upgrade", 700*time.Millisecond, 400, 4, func() *node { return lb.pick(nil) })
	t.Cleanup(func() { w.finish() })
	time.Sleep(5 * time.Second)

	upgraded := map[*node]bool{}
	earlyWrap, earlyWrapRefusal := "untried", ""
	var stuck error
	newOverOld := "none"
	for step := range f.nodes {
		// The leader is asked afresh each time: it may have moved.
		leader := f.leader(30 * time.Second)
		if upgraded[leader] && len(upgraded) < len(f.nodes) && newOverOld == "none" {
			newOverOld = leader.id
		}
		n := leader
		if step != leaderAt || upgraded[leader] {
			for _, m := range f.nodes {
				if !upgraded[m] && m != leader {
					n = m
					break
				}
			}
		}
		tr.phase.Store("stop-" + n.id)
		figs.add("stop_"+n.site.name, "%s", ms(n.stop(drain+30*time.Second)))
		n.binMu.Lock()
		n.bin = cur
		n.binMu.Unlock()
		tr.phase.Store("start-" + n.id)
		n.start()
		took, err := n.readyWithin(90 * time.Second)
		if err != nil {
			// The verdict says so; the nodes left are not upgraded.
			stuck = err
			break
		}
		figs.add("ready_"+n.site.name, "%s", ms(took))
		upgraded[n] = true
		if len(upgraded) == 1 {
			// A key usage older builds cannot decode: refused while any
			// voter runs one, through the upgraded node's own CLI.
			out, err := n.cli("key", "create", keyStore, "wrap-while-mixed", "--usage", "WRAP,UNWRAP")
			earlyWrap = fmt.Sprintf("%v", err == nil)
			if err == nil || !strings.Contains(out+err.Error(), "command set") {
				earlyWrapRefusal = "not refused as needing a newer command set: " + out
			}
		}
		tr.phase.Store(fmt.Sprintf("upgraded-%d", step+1))
		if n == leader {
			figs.add("leader", "%s", n.site.name)
		}
		// Before the next node, traffic reaches this one as the balancer
		// would send it, as an operator waits for a healthy target.
		time.Sleep(5 * time.Second)
	}
	// Every voter now reads the new command set: the leader raises it, and
	// the key usage refused above is accepted.
	var setErr error
	raised := time.Now()
	setErr = eventually(30*time.Second, func() error {
		st, err := f.nodes[0].status()
		if err != nil {
			return err
		}
		for _, m := range st.Nodes {
			if m.Version == "" || m.CommandSet < 2 {
				return fmt.Errorf("%s reports version %q, command set %d", m.ID, m.Version, m.CommandSet)
			}
		}
		if st.CommandSet < 2 {
			return fmt.Errorf("the cluster is at command set %d", st.CommandSet)
		}
		return nil
	})
	figs.add("command_set_raised", "%s", ms(time.Since(raised)))
	if setErr == nil {
		if out, err := f.nodes[0].cli("key", "create", keyStore, "wrap-after", "--usage", "WRAP,UNWRAP"); err != nil {
			setErr = fmt.Errorf("WRAP key after the upgrade: %v: %s", err, out)
		}
	}
	tr.finish()
	acked, refused := w.finish()
	keys, firstRefused := w.keys, w.firstFail
	lb.finish()

	if stuck != nil {
		verdict(t, scenario, false, "old=%s new=HEAD %s upgraded=%d/%d stuck=%q requests=%d retried=%d failed=%d failures=%q",
			oldBuild, figs, len(upgraded), len(f.nodes), stuck, tr.requests, tr.retried, tr.failed, tr.failures)
		return
	}
	bad, firstBad := f.undecryptable(tr.kept)
	missing := f.missingGrants(acked)
	for _, n := range f.nodes {
		for _, k := range keys {
			if err := n.client().RoundTrip(k, md("Encrypt"), []byte("after the upgrade"), nil); err != nil {
				missing++
				if firstBad == "" {
					firstBad = fmt.Sprintf("key %s on %s: %v", k, n.id, err)
				}
			}
		}
	}
	for _, n := range f.nodes {
		if warn := n.warnings(logStart[n]); len(warn) > 0 {
			t.Logf("%s logged at warn and above during the upgrade: %s", n.id, warn)
		}
	}
	figs.add("requests", "%d", tr.requests)
	figs.add("retried", "%d", tr.retried)
	figs.add("failed", "%d", tr.failed)
	figs.add("ciphertexts", "%d", len(tr.kept))
	figs.add("decrypts_ok", "%d/%d", len(tr.kept)*len(f.nodes)-bad, len(tr.kept)*len(f.nodes))
	figs.add("admin_grants", "%d", len(acked))
	figs.add("admin_keys", "%d", len(keys))
	figs.add("admin_refused", "%d", refused)
	figs.add("admin_missing", "%d", missing)
	figs.add("first_attempts_not_200", "%s", tr.first)
	figs.add("total", "%s", ms(time.Since(testStart)))
	figs.add("new_leader_over_old", "%s", newOverOld)
	figs.add("wrap_key_while_mixed_accepted", "%s", earlyWrap)
	verdict(t, scenario, tr.failed == 0 && bad == 0 && missing == 0 && len(tr.kept) > 0 && len(acked) > 0 && len(keys) > 0 &&
		earlyWrap == "false" && earlyWrapRefusal == "" && setErr == nil,
		"old=%s new=HEAD %s failures=%q first_bad=%q first_refused=%q wrap_refusal=%q command_set=%v",
		oldBuild, figs, tr.failures, firstBad, firstRefused, earlyWrapRefusal, setErr)
}
