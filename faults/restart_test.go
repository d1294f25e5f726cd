package faults

import (
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/xksclient"
)

// adminWriter makes acknowledged admin changes in a loop (a grant per
// change, and a key every keyEvery changes when keyEvery > 0), bounded in
// count and time, and remembers which were acknowledged.
type adminWriter struct {
	stop      chan struct{}
	done      chan struct{}
	mu        sync.Mutex
	acked     []string // the principals of acknowledged grants
	keys      []string // the ids of acknowledged keys
	fails     int
	firstFail string
}

// startAdminWriter adds grants through the first running node.
func (f *fleet) startAdminWriter(prefix string, every time.Duration, maxCount int) *adminWriter {
	return f.writeAdmin(prefix, every, maxCount, 0, func() *node {
		for _, n := range f.nodes {
			if n.running() {
				return n
			}
		}
		return nil
	})
}

// writeAdmin makes a change every `every` through the node via chooses
// (none when it returns nil).
func (f *fleet) writeAdmin(prefix string, every time.Duration, maxCount, keyEvery int, via func() *node) *adminWriter {
	w := &adminWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := range maxCount {
			select {
			case <-w.stop:
				return
			case <-time.After(every):
			}
			n := via()
			if n == nil {
				continue
			}
			name, args, list := fmt.Sprintf("arn:aws:iam::111122223333:role/%s-%d", prefix, i), []string{"grant", "add", keyStore, "--key", keyID, "--principal"}, &w.acked
			if keyEvery > 0 && i%keyEvery == keyEvery-1 {
				name, args, list = fmt.Sprintf("%s-key-%d", prefix, i), []string{"key", "create", keyStore}, &w.keys
			}
			_, err := n.cli(append(args, name)...)
			// Exit status 3: committed, not confirmed by a node that is
			// down; the change must survive all the same.
			var exit *exec.ExitError
			w.mu.Lock()
			if err == nil || errors.As(err, &exit) && exit.ExitCode() == 3 {
				*list = append(*list, name)
			} else {
				w.fails++
				if w.firstFail == "" {
					w.firstFail = fmt.Sprintf("via %s: %v", n.id, err)
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// finish stops the writer; it may be called more than once.
func (w *adminWriter) finish() (acked []string, fails int) {
	return w.finish2(0)
}

// finish2 waits up to limit for the writer to end by itself (its count),
// then stops it.
func (w *adminWriter) finish2(limit time.Duration) (acked []string, fails int) {
	select {
	case <-w.done:
	case <-time.After(limit):
	}
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked, w.fails
}

// probeAll sends each XKS operation once to n and returns their outcomes.
func (n *node) probeAll(ct *xksclient.EncryptResponse) map[string]outcome {
	c := n.client()
	out := map[string]outcome{}
	_, o := n.encrypt([]byte("probe"))
	out["encrypt"] = o
	_, err := c.Decrypt(keyID, &xksclient.DecryptRequest{RequestMetadata: md("Decrypt"), Ciphertext: ct.Ciphertext,
		CiphertextMetadata: ct.CiphertextMetadata, IV: ct.IV, Tag: ct.Tag})
	out["decrypt"] = classify(err)
	_, err = c.Metadata(keyID, md("DescribeKey"))
	out["metadata"] = classify(err)
	_, err = c.Health(md("CreateCustomKeyStore"))
	out["health"] = classify(err)
	return out
}

// Scenario 4: a node restarted while the cluster keeps changing answers
// nothing but what AWS KMS retries (500 InternalException, 503, 429) until
// it has caught up — never 404 InvalidUriPathException or another answer
// KMS reads as a configuration error.
func TestRestartWhileChanging(t *testing.T) {
	f := newFleet(t, suiteStaleness)
	leader := f.leader(30 * time.Second)
	victim := f.others(leader)[0]
	ct, o := victim.encrypt([]byte("made before the restart"))
	if o.status != 200 {
		t.Fatalf("encrypt on %s: %v", victim.id, o)
	}
	w := f.startAdminWriter("restart", 150*time.Millisecond, 400)
	time.Sleep(2 * time.Second)
	victim.kill()
	down := 6 * time.Second
	if full() {
		down = 15 * time.Second
	}
	time.Sleep(down)
	victim.start()
	startAt := time.Now()
	answers := tally{}
	var bad []string
	var firstOK time.Duration
	okSince := time.Time{}
	for deadline := startAt.Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		all := true
		for op, o := range victim.probeAll(ct) {
			answers[op+" "+o.String()]++
			if o.status != 200 {
				all = false
			}
			if o.status != 200 && !o.retryable() && len(bad) < 5 {
				bad = append(bad, fmt.Sprintf("+%s %s %s", ms(time.Since(startAt)), op, o.err))
			}
		}
		switch {
		case !all:
			okSince = time.Time{}
		case okSince.IsZero():
			okSince = time.Now()
			if firstOK == 0 {
				firstOK = time.Since(startAt)
			}
		case time.Since(okSince) > 2*time.Second:
			deadline = time.Now()
		}
	}
	acked, fails := w.finish()
	nonRetryable := 0
	for k, c := range answers {
		if o := parseAnswer(k); o.status != 200 && !o.retryable() {
			nonRetryable += c
		}
	}
	verdict(t, "restart-while-changing", nonRetryable == 0 && firstOK > 0,
		"node=%s down=%s start_to_all_ops_200=%s non_retryable=%d admin_changes_acked=%d refused=%d answers=%s first_bad=%q",
		victim.id, down, ms(firstOK), nonRetryable, len(acked), fails, answers, bad)
}

// parseAnswer turns a tally key ("op 200", "op 500 InternalException", "op
// no answer") back into an outcome.
func parseAnswer(k string) outcome {
	var op, name string
	var status int
	if n, _ := fmt.Sscanf(k, "%s %d %s", &op, &status, &name); n >= 2 {
		return outcome{status: status, name: name}
	}
	return outcome{}
}
