package faults

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// loopbackAddrs place the three sites on the host's loopback, for the tests
// that need no network faults and so no root: every 127.0.0.0/8 address is
// the host's own on Linux.
var loopbackAddrs = map[string]string{"a": "127.0.0.11", "b": "127.0.0.12", "c": "127.0.0.13"}

// requireLoopback skips the test, saying why, where a loopback fleet cannot
// run.
func requireLoopback(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Skipf("needs softhsm2-util (make deps installs it): %v", err)
	}
	cleanupOnSignal()
}

// loopbackSites are the three sites on loopback. The ports are free ones
// (deploy/three-site's 443 needs root, and the admin API's 127.0.0.1:7100
// would be shared by the three nodes), chosen while every listener is open so
// that no two are the same; gossip's port is free for UDP too.
func loopbackSites(t *testing.T) []*site {
	t.Helper()
	var held []func() error
	defer func() {
		for _, c := range held {
			c()
		}
	}()
	free := func(addr string, udp bool) string {
		for range 20 {
			ln, err := net.Listen("tcp", addr+":0")
			if err != nil {
				t.Fatalf("listen on %s: %v", addr, err)
			}
			held = append(held, ln.Close)
			hostPort := ln.Addr().String()
			if !udp {
				return hostPort
			}
			pc, err := net.ListenPacket("udp", hostPort)
			if err == nil {
				held = append(held, pc.Close)
				return hostPort
			}
		}
		t.Fatalf("no port on %s is free for both TCP and UDP after 20 tries", addr)
		return ""
	}
	var sites []*site
	for _, name := range siteOrder {
		s := &site{name: name, addr: loopbackAddrs[name], fd: -1}
		s.api, s.health, s.cluster, s.gossip, s.admin = free(s.addr, false), free(s.addr, false), free(s.addr, false), free(s.addr, true), free(s.addr, false)
		sites = append(sites, s)
	}
	return sites
}

// loopbackConfig is deploy/three-site/site-NAME.toml (through siteConfig)
// with every site's addresses moved to its loopback ones, and drain_time
// set to drain.
func loopbackConfig(t testing.TB, s *site, sites []*site, dir string, staleness, drain time.Duration) string {
	t.Helper()
	pairs := [][2]string{
		{`"127.0.0.1:7100"`, strconv.Quote(s.admin)},
		{`drain_time    = "10s"`, fmt.Sprintf(`drain_time    = "%s"`, drain)},
		{siteAddrs[s.name] + ":443", s.api},
		{siteAddrs[s.name] + ":8080", s.health},
	}
	for _, o := range sites {
		pairs = append(pairs, [2]string{siteAddrs[o.name] + ":7000", o.cluster}, [2]string{siteAddrs[o.name] + ":7946", o.gossip})
	}
	return substitute(t, s.name, siteConfig(t, s.name, dir, staleness), pairs)
}
