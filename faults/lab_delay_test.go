package faults

import (
	"net"
	"testing"
	"time"
)

// The delay the lab adds between sites is what it claims: a TCP connect
// (one round trip) between two sites takes 2×hold more than without it,
// and traffic inside a site is not delayed.
func TestLabDelay(t *testing.T) {
	l := newLab(t, map[string]string{"a": "10.1.0.11", "b": "10.2.0.11"}, []string{"a", "b"})
	a, b := l.site("a"), l.site("b")
	ln, err := inNamespace(b.fd, func() (net.Listener, error) { return net.Listen("tcp", b.addr+":9") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	const hold = 15 * time.Millisecond
	before, err := a.connectRTT(b.addr+":9", 20)
	if err != nil {
		t.Fatal(err)
	}
	l.delaySites(hold)
	after, err := a.connectRTT(b.addr+":9", 20)
	if err != nil {
		t.Fatal(err)
	}
	local, err := b.connectRTT(b.addr+":9", 20)
	if err != nil {
		t.Fatal(err)
	}
	added := after - before
	pass := added >= 2*hold && added < 2*hold+15*time.Millisecond && local < 5*time.Millisecond
	verdict(t, "lab-delay", pass, "hold=%s rtt_before=%s rtt_after=%s added=%s (want %s..%s) local_rtt=%s",
		hold, before.Round(10*time.Microsecond), after.Round(10*time.Microsecond), added.Round(10*time.Microsecond),
		2*hold, 2*hold+15*time.Millisecond, local.Round(10*time.Microsecond))
}
