package xksapi_test

import (
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm"
)

// A node with several HSMs lists each in GetHealthStatus, and one that
// fails is reported UNAVAILABLE on its own while the node keeps serving
// from the other.
func TestHealthListsEachHSM(t *testing.T) {
	second, err := hsm.Open(hsm.Config{ModulePath: testModule, TokenLabel: secondToken, PIN: testPIN,
		HealthInterval: time.Hour, WaitTimeout: 2 * time.Second, CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	// Not closed: testHSM belongs to the whole package.
	g, err := hsm.NewGroup(second, testHSM)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, fixtureOptions{hsm: g})
	c := f.clientA()
	statuses := func() map[string]string {
		t.Helper()
		h, err := c.Health(metadata(""))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, m := range h.Fleet {
			out[m.ID] = m.HealthStatus
		}
		if h.FleetSize != len(h.Fleet) {
			t.Errorf("fleet size %d with %d entries", h.FleetSize, len(h.Fleet))
		}
		return out
	}
	first, other := "test-node/"+secondToken, "test-node/"+testToken
	if got := statuses(); len(got) != 2 || got[first] != "ACTIVE" || got[other] != "ACTIVE" {
		t.Fatalf("two healthy HSMs: %v", got)
	}
	// The key is only in testHSM's token: served there, whichever member
	// the group tries first (the start rotates, so some of these try the
	// healthy member without the key first).
	roundTrips := func(plaintext string) {
		t.Helper()
		for range 4 {
			if err := c.RoundTrip("k1", metadata("Encrypt"), []byte(plaintext), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	roundTrips("two HSMs, one with the key")

	second.Close()
	if got := statuses(); len(got) != 2 || got[first] != "UNAVAILABLE" || got[other] != "ACTIVE" {
		t.Fatalf("one HSM down: %v", got)
	}
	roundTrips("one HSM left")
}
