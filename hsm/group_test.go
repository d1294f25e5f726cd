package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm/netsim"
)

// openGroup opens nodeA and nodeB through the simulated network HSM, with
// the same cluster keys, as a group holding one replicated key.
func openGroup(t *testing.T) (g *Group, a, b *HSM, label string) {
	t.Helper()
	cfgs := make([]Config, 2)
	for i, token := range []string{nodeA, nodeB} {
		cfgs[i] = netsimConfig(t, token, netsim.Config{})
		cfgs[i].PoolSize = 4
		cfgs[i].WaitTimeout = time.Second
		cfgs[i].CallTimeout = 200 * time.Millisecond
		cfgs[i].HealthInterval = 200 * time.Millisecond
	}
	a, b = openT(t, cfgs[0]), openT(t, cfgs[1])
	for _, h := range []*HSM{a, b} {
		if err := h.ImportClusterKeys(clusterMaterial); err != nil {
			t.Fatal(err)
		}
	}
	g, err := NewGroup(a, b)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, mech, err := g.GenerateWrappedKey()
	if err != nil {
		t.Fatal(err)
	}
	label = uniqueLabel("group")
	if err := g.UnwrapKey(wrapped, mech, label); err != nil {
		t.Fatal(err)
	}
	if ok, err := g.HasKey(label); !ok || err != nil {
		t.Fatalf("the replicated key is not in every member: %v, %v", ok, err)
	}
	return g, a, b, label
}

// groupLoad runs round trips through g from a few goroutines until stop
// returns, at most 20,000 in all; it counts what failed.
func groupLoad(g *Group, label string) (stop func() (done, failed int64, firstErr error)) {
	var done, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	var quit atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 5000 && !quit.Load(); n++ {
				iv, pt := randomBytes(12), randomBytes(32)
				ct, tag, err := g.EncryptGCM(label, iv, pt, nil)
				if err == nil {
					var back []byte
					back, err = g.DecryptGCM(label, iv, ct, tag, nil)
					if err == nil && !bytes.Equal(back, pt) {
						err = fmt.Errorf("round trip returned other bytes")
					}
				}
				done.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	return func() (int64, int64, error) {
		quit.Store(true)
		wg.Wait()
		var err error
		if p := firstErr.Load(); p != nil {
			err = *p
		}
		return done.Load(), failed.Load(), err
	}
}

// One of two HSMs hangs, or fails with a device error, under load: no
// request fails (those in flight on it are retried on the other), it is
// out of rotation while it is sick, and it rejoins and serves once healed.
func TestGroupFailover(t *testing.T) {
	for _, fault := range []netsim.Fault{netsim.FaultHang, netsim.FaultError} {
		t.Run(string(fault), func(t *testing.T) {
			g, a, _, label := openGroup(t)
			stop := groupLoad(g, label)
			waitFor(t, "both members to serve", 10*time.Second, func() bool {
				return g.served[0].Load() > 10 && g.served[1].Load() > 10
			})

			setNetsim(t, netsim.Config{Fault: fault, FaultToken: nodeA})
			waitFor(t, "the sick member to leave the rotation", 10*time.Second, func() bool { return !a.inRotation() })
			servedB := g.served[1].Load()
			waitFor(t, "the other member to carry the load", 10*time.Second, func() bool { return g.served[1].Load() > servedB+50 })
			if st := g.Health().Status; st == StatusUnavailable {
				t.Errorf("group health %v with one member serving", st)
			}

			setNetsim(t, netsim.Config{})
			waitFor(t, "the healed member to rejoin", 15*time.Second, func() bool { return a.inRotation() })
			servedA := g.served[0].Load()
			waitFor(t, "the healed member to serve again", 10*time.Second, func() bool { return g.served[0].Load() > servedA+10 })

			done, failed, err := stop()
			if failed != 0 {
				t.Fatalf("%d of %d round trips failed (first: %v)", failed, done, err)
			}
			t.Logf("%d round trips, none failed; served by A %d, by B %d", done, g.served[0].Load(), g.served[1].Load())
		})
	}
}

// When every member failed, the answer is the most telling of their errors,
// whatever order they were tried in: a live member's shedding (429) over a
// timeout (503) over a down member (500) over a missing key.
func TestMostTellingError(t *testing.T) {
	wrapped := func(e error) error { return fmt.Errorf("token %q: %w", "x", e) }
	for _, tc := range []struct {
		errs []error
		want error
	}{
		{[]error{ErrBusy, ErrUnavailable}, ErrBusy},
		{[]error{ErrUnavailable, ErrBusy}, ErrBusy},
		{[]error{ErrKeyNotFound, wrapped(ErrUnavailable)}, ErrUnavailable},
		{[]error{ErrUnavailable, ErrTimeout, ErrKeyNotFound}, ErrTimeout},
		{[]error{ErrKeyNotFound, ErrKeyNotFound}, ErrKeyNotFound},
		{[]error{wrapped(ErrTimeout)}, ErrTimeout},
	} {
		var got error
		for _, e := range tc.errs {
			got = mostTelling(got, e)
		}
		if !errors.Is(got, tc.want) {
			t.Errorf("%v: got %v, want %v", tc.errs, got, tc.want)
		}
	}
}

// A group's health is as old as its freshest serving member's check, not
// made fresh by asking: with every monitor stalled, the node's readiness
// must see the check go overdue, as it does with one HSM.
func TestGroupHealthIsAsOldAsItsChecks(t *testing.T) {
	cfgs := []Config{testConfig(nodeA), testConfig(nodeB)}
	for i := range cfgs {
		cfgs[i].HealthInterval = time.Hour
	}
	a, b := openT(t, cfgs[0]), openT(t, cfgs[1])
	g, err := NewGroup(a, b)
	if err != nil {
		t.Fatal(err)
	}
	newest := a.Health().CheckedAt
	if bt := b.Health().CheckedAt; bt.After(newest) {
		newest = bt
	}
	time.Sleep(20 * time.Millisecond)
	if got := g.Health().CheckedAt; !got.Equal(newest) {
		t.Fatalf("group checked at %v, want its members' latest check %v", got, newest)
	}
}
