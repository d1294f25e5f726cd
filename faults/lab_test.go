package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsPrefix starts the name of every namespace the suite makes; the pid that
// follows it lets a later run remove what a killed run left behind.
const nsPrefix = "xksf"

// cleanups run on t.Cleanup and, should the test binary be interrupted, on
// SIGINT/SIGTERM: a namespace, a mount or a node left behind would break the
// next run and the machine's other users.
var cleanups struct {
	sync.Mutex
	fns []*cleanup
}

type cleanup struct {
	once sync.Once
	fn   func()
}

func (c *cleanup) run() { c.once.Do(c.fn) }

// deferCleanup registers fn with t and with the signal handler; it runs once.
func deferCleanup(t testing.TB, fn func()) {
	c := &cleanup{fn: fn}
	cleanups.Lock()
	cleanups.fns = append(cleanups.fns, c)
	cleanups.Unlock()
	t.Cleanup(c.run)
}

var signalOnce sync.Once

func cleanupOnSignal() {
	signalOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		go func() {
			s := <-ch
			fmt.Fprintf(os.Stderr, "faults: %v: cleaning up namespaces, mounts and nodes\n", s)
			cleanups.Lock()
			fns := cleanups.fns
			cleanups.Unlock()
			for i := len(fns) - 1; i >= 0; i-- {
				fns[i].run()
			}
			os.Exit(2)
		}()
	})
}

// sh runs a command with a time limit and returns its combined output.
func sh(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func must(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := sh(30*time.Second, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// requireLab skips the test, saying why, where the lab cannot be built:
// namespaces, veths and iptables need root and a kernel that allows them.
func requireLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the fault suite needs root: it creates network namespaces, veth pairs, a bridge, iptables rules and tmpfs mounts")
	}
	for _, tool := range []string{"ip", "iptables", "softhsm2-util"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the fault suite needs %s (scripts/install-deps.sh installs it when run as root): %v", tool, err)
		}
	}
	name := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
	if out, err := sh(10*time.Second, "ip", "netns", "add", name); err != nil {
		t.Skipf("network namespaces cannot be created here: %v %s", err, out)
	}
	defer sh(10*time.Second, "ip", "netns", "del", name)
	if out, err := sh(10*time.Second, "ip", "netns", "exec", name, "iptables", "-S"); err != nil {
		t.Skipf("iptables does not work inside a network namespace here: %v %s", err, out)
	}
}

// removeStaleNamespaces deletes the namespaces of earlier runs whose process
// is gone (a run killed with SIGKILL cannot clean up after itself).
func removeStaleNamespaces() {
	out, err := sh(10*time.Second, "ip", "netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + pidText); err == nil {
			continue
		}
		sh(10*time.Second, "ip", "netns", "del", name)
	}
}

// lab is one run's network: a bridge in a namespace of its own, and one
// namespace per site joined to it by a veth pair, with the site's address.
// Nothing is added to the host's own namespace.
type lab struct {
	t     testing.TB
	run   string
	br    string // the namespace holding the bridge
	sites []*site
	delay *delayer
}

type site struct {
	name string // "a", "b", "c"
	ns   string // "" for a loopback site: the host's own network
	addr string
	fd   int // the namespace's file descriptor, for setns
	// Where the site's node listens, host:port.
	api, health, cluster, gossip, admin string
}

// labPorts are deploy/three-site's ports, which each namespace has to itself.
func (s *site) labPorts() {
	s.api, s.health, s.cluster, s.gossip = s.addr+":443", s.addr+":8080", s.addr+":7000", s.addr+":7946"
	s.admin = "127.0.0.1:7100"
}

// argv is the command line that runs name with args at the site: inside its
// namespace, or as is on loopback.
func (s *site) argv(name string, args ...string) []string {
	if s.ns == "" {
		return append([]string{name}, args...)
	}
	return append([]string{"ip", "netns", "exec", s.ns, name}, args...)
}

var labSeq int

func newLab(t *testing.T, addrs map[string]string, order []string) *lab {
	t.Helper()
	requireLab(t)
	cleanupOnSignal()
	removeStaleNamespaces()
	labSeq++
	l := &lab{t: t, run: fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), labSeq)}
	l.br = l.run + "-br"
	must(t, "ip", "netns", "add", l.br)
	deferCleanup(t, func() { sh(10*time.Second, "ip", "netns", "del", l.br) })
	must(t, "ip", "-n", l.br, "link", "add", "br0", "type", "bridge")
	must(t, "ip", "-n", l.br, "link", "set", "br0", "up")
	for i, name := range order {
		s := &site{name: name, ns: l.run + "-" + name, addr: addrs[name]}
		s.labPorts()
		must(t, "ip", "netns", "add", s.ns)
		deferCleanup(t, func() { sh(10*time.Second, "ip", "netns", "del", s.ns) })
		veth := fmt.Sprintf("v%d", i)
		must(t, "ip", "-n", l.br, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", s.ns)
		must(t, "ip", "-n", l.br, "link", "set", veth, "master", "br0", "up")
		must(t, "ip", "-n", s.ns, "link", "set", "lo", "up")
		must(t, "ip", "-n", s.ns, "addr", "add", s.addr+"/8", "dev", "eth0")
		must(t, "ip", "-n", s.ns, "link", "set", "eth0", "up")
		// Partitions go in FAULTS, first in both directions; the delay in
		// DELAY, after them, so that a cut packet is dropped, not queued.
		for _, chain := range []string{"FAULTS", "DELAY"} {
			must(t, "ip", "netns", "exec", s.ns, "iptables", "-N", chain)
		}
		must(t, "ip", "netns", "exec", s.ns, "iptables", "-A", "INPUT", "-j", "FAULTS")
		must(t, "ip", "netns", "exec", s.ns, "iptables", "-A", "OUTPUT", "-j", "FAULTS")
		must(t, "ip", "netns", "exec", s.ns, "iptables", "-A", "OUTPUT", "-j", "DELAY")
		fd, err := unix.Open("/run/netns/"+s.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		deferCleanup(t, func() { unix.Close(fd) })
		s.fd = fd
		l.sites = append(l.sites, s)
	}
	return l
}

func (l *lab) site(name string) *site {
	for _, s := range l.sites {
		if s.name == name {
			return s
		}
	}
	l.t.Fatalf("no site %q", name)
	return nil
}

// cut drops every packet between s and each of others, both ways, on both
// sides: DROP rather than REJECT, so that it looks like a WAN cut (no RST, no
// ICMP; connections hang until their own timeouts).
func (l *lab) cut(s *site, others ...*site) {
	for _, o := range others {
		for _, pair := range [][2]*site{{s, o}, {o, s}} {
			must(l.t, "ip", "netns", "exec", pair[0].ns, "iptables", "-A", "FAULTS", "-s", pair[1].addr, "-j", "DROP")
			must(l.t, "ip", "netns", "exec", pair[0].ns, "iptables", "-A", "FAULTS", "-d", pair[1].addr, "-j", "DROP")
		}
	}
}

// heal removes every partition.
func (l *lab) heal() {
	for _, s := range l.sites {
		must(l.t, "ip", "netns", "exec", s.ns, "iptables", "-F", "FAULTS")
	}
}

// dialer opens connections from inside s's namespace: the test process
// stays in the host's namespace, and only the socket is made in the site's.
func (s *site) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	if s.ns == "" {
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return inNamespace(s.fd, func() (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		})
	}
}

// inNamespace runs fn on an OS thread moved into the namespace fd; a socket
// made there stays in that namespace for its life. The thread goes back to
// the host's namespace, or is thrown away if it cannot.
func inNamespace[T any](fd int, fn func() (T, error)) (T, error) {
	var zero T
	runtime.LockOSThread()
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return zero, err
	}
	defer unix.Close(home)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return zero, fmt.Errorf("setns: %w", err)
	}
	v, ferr := fn()
	if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
		// Left locked, the thread exits with this goroutine instead of
		// serving others from the wrong namespace.
		return v, errors.Join(ferr, fmt.Errorf("setns back: %w", err))
	}
	runtime.UnlockOSThread()
	return v, ferr
}

// connectRTT is the median time of a TCP connect from s to addr: one round
// trip (SYN, SYN-ACK) through whatever the lab adds on the way.
func (s *site) connectRTT(addr string, samples int) (time.Duration, error) {
	var ds []time.Duration
	for range samples {
		start := time.Now()
		c, err := s.dialer()(context.Background(), "tcp", addr)
		if err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(start))
		c.Close()
	}
	return median(ds), nil
}
