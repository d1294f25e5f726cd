package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The bench's HTTP client is its own, built for an open-loop generator that
// shares two cores with the proxy it measures: a request is written by the
// goroutine that dispatches it, at its due time, on a free keep-alive
// connection, and its answer is read by the connection's own goroutine,
// which was already waiting on the socket. A request therefore starts no
// goroutine and wakes none. Each hand-off between goroutines can cost the
// Go runtime a thread wake-up, a context switch that on a small VM costs
// more than the request's own work: with net/http (a goroutine per request,
// two per connection, three hand-offs per request) they were much of the
// bench's cost, and they were still a third of it with a goroutine per
// request and no other hand-off.
//
// It speaks HTTP/1.1 only, as the XKS specification requires and AWS KMS
// does: one request per connection at a time, at most maxConns connections
// per endpoint; a request finding none free waits for one, and that wait is
// part of its latency, as it would be for any client with this pool.

// maxResponseBytes bounds what the bench reads of one answer; XKS answers
// are at most a few kilobytes.
const maxResponseBytes = 64 << 10

// errResponseTooLarge is an answer beyond maxResponseBytes.
var errResponseTooLarge = fmt.Errorf("answer larger than %d bytes", maxResponseBytes)

// errNoConnection ends a request that found no free connection before its
// deadline.
var errNoConnection = fmt.Errorf("no connection came free before the request's timeout: %w", os.ErrDeadlineExceeded)

// exchange is one request and, once it ends, its outcome. The endpoint ends
// it exactly once, through done, from whichever goroutine learns the
// outcome.
type exchange struct {
	request  *[]byte   // the whole HTTP request, until it is written
	deadline time.Time // for the connection, the write and the whole answer
	done     func(x *exchange, status int, body []byte, err error)

	// What the answer is checked against (see caller), and the run's
	// bookkeeping.
	ks      *keyState
	op      Op
	pt, aad []byte
	sample  sample
	key     int
	due     time.Time
}

// requests recycles the buffers requests are written from.
var requests = sync.Pool{New: func() any { return new([]byte) }}

// abandon ends x before it was written.
func (x *exchange) abandon(err error) {
	requests.Put(x.request)
	x.done(x, 0, nil, err)
}

// endpoint is one node of the target with its own bounded connection pool.
type endpoint struct {
	base     string // https://host:port
	host     string // host[:port], as signed and as sent in the Host header
	addr     string // host:port, as dialled
	tls      *tls.Config
	maxConns int

	mu          sync.Mutex
	idle        []*conn // free connections, the most recently used last
	conns       map[*conn]struct{}
	open        int         // connections open or being dialled
	waiting     []*exchange // requests waiting for a connection, oldest first from head
	head        int
	waitTimer   *time.Timer // fires at the deadline of the oldest waiting request
	cutoff      bool
	dialCtx     context.Context // ended by cutOff
	cancelDials context.CancelFunc
}

func newEndpoints(t Target, connections int) ([]*endpoint, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", t.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	var eps []*endpoint
	for _, e := range t.Endpoints {
		u, err := url.Parse(e)
		if err != nil {
			return nil, err
		}
		cfg := tlsConfig.Clone()
		cfg.ServerName = u.Hostname()
		// Resumed handshakes when a connection is replaced, as a real
		// client would do.
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(connections)
		addr := u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "443")
		}
		ep := &endpoint{base: strings.TrimSuffix(e, "/"), host: u.Host, addr: addr, tls: cfg, maxConns: connections,
			conns: map[*conn]struct{}{}}
		ep.dialCtx, ep.cancelDials = context.WithCancel(context.Background())
		ep.waitTimer = time.AfterFunc(time.Hour, ep.expireWaiting)
		ep.waitTimer.Stop()
		eps = append(eps, ep)
	}
	return eps, nil
}

// do sends x on a free connection, from the calling goroutine; or on a new
// one, dialled by a goroutine of its own; or, when every connection is
// busy, as soon as one comes free.
func (e *endpoint) do(x *exchange) {
	e.mu.Lock()
	switch {
	case e.cutoff:
		e.mu.Unlock()
		x.abandon(context.Canceled)
	case len(e.idle) > 0:
		c := e.idle[len(e.idle)-1]
		e.idle = e.idle[:len(e.idle)-1]
		e.mu.Unlock()
		c.send(x)
	case e.open < e.maxConns:
		e.open++
		ctx := e.dialCtx
		e.mu.Unlock()
		go e.dial(ctx, x)
	default:
		e.waiting = append(e.waiting, x)
		if len(e.waiting)-e.head == 1 {
			e.waitTimer.Reset(time.Until(x.deadline))
		}
		e.mu.Unlock()
	}
}

var dialer = net.Dialer{KeepAlive: 30 * time.Second}

// dial opens a connection for x, bounded by x's deadline, and sends x on it.
func (e *endpoint) dial(ctx context.Context, x *exchange) {
	c, err := e.connect(ctx, x.deadline)
	if err != nil {
		e.lost(nil)
		x.abandon(err)
		return
	}
	c.send(x)
}

// connect opens a connection by deadline and starts reading from it. The
// caller has counted it in e.open, and calls lost(nil) if it fails.
func (e *endpoint) connect(ctx context.Context, deadline time.Time) (*conn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	raw, err := dialer.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return nil, e.cause(err)
	}
	tc := tls.Client(raw, e.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, e.cause(err)
	}
	c := &conn{ep: e, nc: tc, br: bufio.NewReaderSize(tc, 4096)}
	e.mu.Lock()
	if e.cutoff {
		e.mu.Unlock()
		tc.Close()
		return nil, context.Canceled
	}
	e.conns[c] = struct{}{}
	e.mu.Unlock()
	go c.readLoop()
	return c, nil
}

// fillParallel is how many handshakes fill runs at once: few, so that a
// small node is not swamped by them before the run begins.
const fillParallel = 4

// fill opens connections until the endpoint has all it may, each within
// timeout, so that their TLS handshakes happen before the load instead of
// inside it. It is best effort: a connection that fails to open is opened
// on demand later, and the requests that need it report why.
func (e *endpoint) fill(timeout time.Duration) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, fillParallel)
	e.mu.Lock()
	missing := e.maxConns - e.open
	e.mu.Unlock()
	for range missing {
		e.mu.Lock()
		if e.cutoff || e.open >= e.maxConns {
			e.mu.Unlock()
			break
		}
		e.open++
		ctx := e.dialCtx
		e.mu.Unlock()
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			c, err := e.connect(ctx, time.Now().Add(timeout))
			if err != nil {
				e.lost(nil)
				return
			}
			if x := e.release(c); x != nil {
				c.send(x)
			}
		})
	}
	wg.Wait()
}

// popWaiting takes the oldest waiting request, if any. e.mu is held.
func (e *endpoint) popWaiting() *exchange {
	if e.head == len(e.waiting) {
		return nil
	}
	x := e.waiting[e.head]
	e.waiting[e.head] = nil
	e.head++
	switch {
	case e.head == len(e.waiting):
		e.waiting, e.head = e.waiting[:0], 0
		e.waitTimer.Stop()
	default:
		if e.head > len(e.waiting)/2 {
			n := copy(e.waiting, e.waiting[e.head:])
			clear(e.waiting[n:])
			e.waiting, e.head = e.waiting[:n], 0
		}
		e.waitTimer.Reset(time.Until(e.waiting[e.head].deadline))
	}
	return x
}

// expireWaiting ends the waiting requests whose deadline has passed.
func (e *endpoint) expireWaiting() {
	var expired []*exchange
	now := time.Now()
	e.mu.Lock()
	for e.head < len(e.waiting) && !e.waiting[e.head].deadline.After(now) {
		expired = append(expired, e.popWaiting())
	}
	e.mu.Unlock()
	for _, x := range expired {
		x.abandon(errNoConnection)
	}
}

// release takes back c after an answer: it returns the oldest waiting
// request, for c to carry at once, or keeps c for the next.
func (e *endpoint) release(c *conn) *exchange {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.popWaiting(); x != nil {
		return x
	}
	e.idle = append(e.idle, c)
	return nil
}

// lost accounts for a connection that closed, or (c nil) failed to open: a
// waiting request may now open one.
func (e *endpoint) lost(c *conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c != nil {
		delete(e.conns, c)
		for i, ic := range e.idle {
			if ic == c {
				e.idle = append(e.idle[:i], e.idle[i+1:]...)
				break
			}
		}
	}
	e.open--
	if e.cutoff {
		return
	}
	if x := e.popWaiting(); x != nil {
		e.open++
		go e.dial(e.dialCtx, x)
	}
}

// cause is what ended a request on a failed connection: the failure
// itself, unless cutOff closed the connection under it.
func (e *endpoint) cause(err error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cutoff {
		return context.Canceled
	}
	return err
}

// cutOff ends every request in flight or waiting at once, as cancelled, by
// closing the connections under them, and fails new ones, until restore.
func (e *endpoint) cutOff() {
	e.mu.Lock()
	e.cutoff = true
	e.cancelDials()
	var waiting []*exchange
	for x := e.popWaiting(); x != nil; x = e.popWaiting() {
		waiting = append(waiting, x)
	}
	conns := make([]*conn, 0, len(e.conns))
	for c := range e.conns {
		conns = append(conns, c)
	}
	clear(e.conns)
	e.idle = e.idle[:0]
	e.mu.Unlock()
	for _, c := range conns {
		c.nc.Close()
	}
	for _, x := range waiting {
		x.abandon(context.Canceled)
	}
}

// restore makes a cut-off endpoint usable again.
func (e *endpoint) restore() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cutoff = false
	e.dialCtx, e.cancelDials = context.WithCancel(context.Background())
}

// close closes every connection; no request may be in flight.
func (e *endpoint) close() {
	e.mu.Lock()
	conns := make([]*conn, 0, len(e.conns))
	for c := range e.conns {
		conns = append(conns, c)
	}
	e.mu.Unlock()
	for _, c := range conns {
		c.nc.Close()
	}
}

// conn is one keep-alive connection. Its goroutine, readLoop, waits on the
// socket all its life and reads each answer as it arrives.
type conn struct {
	ep      *endpoint
	nc      net.Conn
	br      *bufio.Reader
	body    []byte                   // the last answer's body, reused
	pending atomic.Pointer[exchange] // the request on the wire
}

// send writes x's request. Whoever takes x out of pending (Swap) ends it:
// the reader with its answer, or send when the write fails.
func (c *conn) send(x *exchange) {
	c.pending.Store(x)
	err := c.nc.SetDeadline(x.deadline)
	if err == nil {
		_, err = c.nc.Write(*x.request)
	}
	requests.Put(x.request)
	if err != nil && c.pending.CompareAndSwap(x, nil) {
		c.nc.Close()
		x.done(x, 0, nil, c.ep.cause(err))
	}
}

func (c *conn) readLoop() {
	for {
		status, body, keep, err := readResponse(c.br, c.body[:0])
		c.body = body
		if err != nil {
			c.fail(err)
			return
		}
		x := c.pending.Swap(nil)
		if x == nil {
			c.fail(errors.New("an answer to no request"))
			return
		}
		if keep {
			// No deadline while idle: an idle connection waits for the next
			// request, or for the server to close it.
			keep = c.nc.SetDeadline(time.Time{}) == nil
		}
		// The connection is free before the answer is checked, so that the
		// next request may go out meanwhile.
		var next *exchange
		if keep {
			next = c.ep.release(c)
		} else {
			c.nc.Close()
			c.ep.lost(c)
		}
		x.done(x, status, body, nil)
		if !keep {
			return
		}
		if next != nil {
			c.send(next)
		}
	}
}

// fail closes c and ends the request on it, if any, with err. The close
// comes first: a request that send stores after the Swap then fails its own
// write and ends itself, so none is left on a dead connection.
func (c *conn) fail(err error) {
	c.nc.Close()
	c.ep.lost(c)
	if x := c.pending.Swap(nil); x != nil {
		x.done(x, 0, nil, c.ep.cause(err))
	}
}

// classifyTransport names a failure to get an answer at all.
func classifyTransport(err error) failure {
	if errors.Is(err, errResponseTooLarge) {
		return failure{kind: kindClient, name: errBadResponse, message: err.Error()}
	}
	name := "other"
	var netErr net.Error
	var certErr *tls.CertificateVerificationError
	var recordErr tls.RecordHeaderError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		name = "timeout"
	case errors.Is(err, context.Canceled):
		name = "cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		name = "connection-refused"
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		name = "connection-reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
		name = "connection-closed"
	case errors.As(err, &certErr) || errors.As(err, &recordErr) || strings.Contains(err.Error(), "tls:"):
		name = "tls"
	}
	return failure{kind: kindTransport, name: name, message: clip(err.Error())}
}

// clip keeps a message short and printable for the reports.
func clip(s string) string {
	const maxLen = 200
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) > maxLen {
		return string(b[:maxLen]) + "..."
	}
	return string(b)
}
