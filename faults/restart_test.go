package faults

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench/xksclient"
)

// adminWriter makes acknowledged admin changes through the leader in a
// loop (a grant per change), bounded in count and time, and remembers
// which were acknowledged.
type adminWriter struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	acked []string
	fails int
}

func (f *fleet) startAdminWriter(prefix string, every time.Duration, maxCount int) *adminWriter {
	w := &adminWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := range maxCount {
			select {
			case <-w.stop:
				return
			case <-time.After(every):
			}
			role := fmt.Sprintf("arn:aws:iam::111122223333:role/%s-%d", prefix, i)
			var via *node
			for _, n := range f.nodes {
				if n.running() {
					via = n
					break
				}
			}
			if via == nil {
				continue
			}
			_, err := via.cli("grant", "add", keyStore, "--key", keyID, "--principal", role)
			w.mu.Lock()
			if err == nil {
				w.acked = append(w.acked, role)
			} else {
				w.fails++
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *adminWriter) finish() (acked []string, fails int) {
	close(w.stop)
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
