package faults

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// load encrypts on every running node in a loop, keeps every ciphertext
// that was answered 200, and counts the other answers per phase.
type load struct {
	f      *fleet
	phase  atomic.Value
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	kept   []written
	errors map[string]tally // phase → node outcome → count
}

func (f *fleet) startLoad(every time.Duration) *load {
	l := &load{f: f, stop: make(chan struct{}), errors: map[string]tally{}}
	l.phase.Store("steady")
	for _, n := range f.nodes {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; i < 100000; i++ {
				select {
				case <-l.stop:
					return
				case <-time.After(every):
				}
				if !n.running() {
					continue
				}
				pt := fmt.Appendf(nil, "%s-%d", n.id, i)
				ct, o := n.encrypt(pt)
				l.mu.Lock()
				if o.status == 200 {
					l.kept = append(l.kept, written{pt, ct})
				} else {
					phase := l.phase.Load().(string)
					if l.errors[phase] == nil {
						l.errors[phase] = tally{}
					}
					l.errors[phase][n.id+" "+o.String()]++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

// Scenario 1: kill -9 of the leader under load, its restart, a key
// rotation, kill -9 of every node and their restart: every ciphertext
// written decrypts on every node, and every acknowledged admin change is
// present.
func TestKillUnderLoad(t *testing.T) {
	if !full() {
		t.Skip("full run only (make faults)")
	}
	f := newFleet(t, suiteStaleness)
	var figs figures
	ld := f.startLoad(20 * time.Millisecond)
	w := f.startAdminWriter("kill", 200*time.Millisecond, 1000)
	time.Sleep(3 * time.Second)

	old := f.leader(30 * time.Second)
	ld.phase.Store("failover")
	killAt := time.Now()
	old.kill()
	f.leader(30*time.Second, old)
	figs.add("failover", "%s", ms(time.Since(killAt)))
	ld.phase.Store("one-down")
	time.Sleep(3 * time.Second)
	old.start()
	ld.phase.Store("rejoin")
	figs.add("restart_to_ready", "%s", ms(old.waitReady(60*time.Second)))

	ld.phase.Store("rotation")
	var rot changeResult
	if err := f.leader(30*time.Second).cliJSON(&rot, "key", "rotate", keyStore, keyID); err != nil {
		t.Fatalf("key rotate: %v", err)
	}
	figs.add("rotation_confirmed", "%d/%d", rot.Confirmed, rot.Nodes)
	time.Sleep(3 * time.Second)
	ld.finish()
	acked, refused := w.finish()

	for _, n := range f.nodes {
		n.kill()
	}
	restartAt := time.Now()
	for _, n := range f.nodes {
		n.start()
	}
	for _, n := range f.nodes {
		n.waitReady(90 * time.Second)
	}
	figs.add("full_restart_to_ready", "%s", ms(time.Since(restartAt)))

	bad, firstBad := f.undecryptable(ld.kept)
	missing := f.missingGrants(acked)
	figs.add("ciphertexts", "%d", len(ld.kept))
	figs.add("decrypts_ok", "%d/%d", len(ld.kept)*len(f.nodes)-bad, len(ld.kept)*len(f.nodes))
	figs.add("admin_acked", "%d", len(acked))
	figs.add("admin_refused", "%d", refused)
	figs.add("admin_missing", "%d", missing)
	for phase, tl := range ld.errors {
		figs.add("errors_"+phase, "%s", tl)
	}
	verdict(t, "kill-leader-under-load", bad == 0 && missing == 0 && len(ld.kept) > 0 && len(acked) > 0,
		"old_leader=%s %s first_bad=%q", old.id, figs, firstBad)
}
