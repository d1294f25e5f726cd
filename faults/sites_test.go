package faults

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// siteHold is what the lab holds each packet between two sites: ~30 ms
// round trip, as between European regions.
const siteHold = 15 * time.Millisecond

// Scenario 5: three sites ~30 ms apart. The kill switch still confirms on
// every node, and each site stops serving the key soon after the command
// (disable-to-refused, measured by a client at each site); then each site
// in turn, the leader's too, is cut off for a long time (90 s in the full
// run) while the key is disabled, and never serves it after the heal.
func TestThreeSites(t *testing.T) {
	if !full() {
		t.Skip("full run only (make faults)")
	}
	f := newFleet(t, suiteStaleness)
	a, c := f.nodes[0], f.nodes[2]
	before, err := a.site.connectRTT(c.site.addr+":8080", 20)
	if err != nil {
		t.Fatal(err)
	}
	f.lab.delaySites(siteHold)
	after, err := a.site.connectRTT(c.site.addr+":8080", 20)
	if err != nil {
		t.Fatal(err)
	}
	f.waitServing(30 * time.Second)

	leader := f.leader(30 * time.Second)
	var figs figures
	figs.add("rtt_a_c_before", "%s", before.Round(10*time.Microsecond))
	figs.add("rtt_a_c_after", "%s", after.Round(10*time.Microsecond))
	refused := make([]time.Duration, len(f.nodes))
	var wg sync.WaitGroup
	start := time.Now()
	for i, n := range f.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 10*time.Second {
				if _, o := n.encrypt([]byte("x")); o.status == 400 && o.name == "InvalidStateException" {
					refused[i] = time.Since(start)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	res := setKey(t, leader, false)
	cliTime := time.Since(start)
	wg.Wait()
	allRefused := true
	for i, n := range f.nodes {
		figs.add("disable_to_refused_"+n.site.name, "%s", ms(refused[i]))
		allRefused = allRefused && refused[i] > 0
	}
	for _, ack := range res.Acks {
		figs.add("confirmed_"+ack.Node, "%s", ms(time.Duration(ack.After)))
	}
	figs.add("cli", "%s", ms(cliTime))
	verdict(t, "three-site-kill-switch", res.Confirmed == 3 && res.Nodes == 3 && allRefused && after-before >= 2*siteHold,
		"leader=%s confirmed=%d/%d %s", leader.id, res.Confirmed, res.Nodes, figs)
	setKey(t, leader, true)

	hold := 90 * time.Second
	for _, n := range []*node{leader, f.others(leader)[0], f.others(leader)[1]} {
		role := "follower"
		if n == leader {
			role = "leader"
		}
		f.cutAndDisable(fmt.Sprintf("three-site-cut-%s-%s", n.site.name, role), n, hold, nil)
	}
}
