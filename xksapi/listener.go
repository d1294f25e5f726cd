package xksapi

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// connLimits refuses connections over a total and a per-address limit as
// they are accepted: before a TLS handshake, a goroutine or a buffer is
// spent on them, so that an idle-connection or handshake flood from a few
// addresses runs into its own limit while other clients are served, and a
// flood from many stops short of the file-descriptor limit. A refused
// connection is closed without an answer: to AWS KMS that is an
// unreachable proxy, which it retries (fasthttp's own limits answer a
// plain-text status KMS cannot interpret).
type connLimits struct {
	net.Listener
	s            *Server
	max, perAddr int // <= 0: no limit

	mu     sync.Mutex
	open   int
	byAddr map[netip.Addr]int

	refusedMax, refusedPerAddr prometheus.Counter
}

func (s *Server) limitConns(ln net.Listener, listener int) *connLimits {
	return &connLimits{Listener: ln, s: s, max: s.cfg.MaxConns, perAddr: s.cfg.MaxConnsPerIP, byAddr: map[netip.Addr]int{},
		refusedMax: s.metrics.connsRefused[listener][limitMaxConns], refusedPerAddr: s.metrics.connsRefused[listener][limitMaxConnsPerIP]}
}

func (l *connLimits) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := remoteAddr(c)
		l.mu.Lock()
		overMax := l.max > 0 && l.open >= l.max
		overAddr := l.perAddr > 0 && l.byAddr[addr] >= l.perAddr
		if !overMax && !overAddr {
			l.open++
			l.byAddr[addr]++
		}
		l.mu.Unlock()
		if !overMax && !overAddr {
			return &limitedConn{Conn: c, l: l, addr: addr}, nil
		}
		c.Close()
		limit := "api.max_conns_per_ip"
		if overMax {
			l.refusedMax.Inc()
			limit = "api.max_conns"
		} else {
			l.refusedPerAddr.Inc()
		}
		if ev := l.s.unauthenticatedEvent(zerolog.WarnLevel); ev != nil {
			ev.Str("remote", c.RemoteAddr().String()).Str("limit", limit).Msg("refused a connection over its limit")
		}
	}
}

func (l *connLimits) release(addr netip.Addr) {
	l.mu.Lock()
	l.open--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
	l.mu.Unlock()
}

// openConns is how many accepted connections are open now.
func (l *connLimits) openConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// remoteAddr is the address a connection counts against; IPv4-mapped IPv6
// addresses count as the IPv4 address they are.
func remoteAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// limitedConn gives its place back once, however often it is closed.
type limitedConn struct {
	net.Conn
	l      *connLimits
	addr   netip.Addr
	closed atomic.Bool
}

func (c *limitedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.addr)
	}
	return c.Conn.Close()
}
