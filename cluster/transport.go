package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Every connection between nodes is mutual TLS with the cluster CA, and its
// first byte after the handshake says which protocol follows, so Raft and
// the node-to-node RPCs share one port and one trust decision.
const (
	protoRaft byte = 'R'
	protoRPC  byte = 'P'
)

// TLSFiles are a node's cluster credentials: the cluster CA and this node's
// certificate issued by it. Holding such a certificate is what makes a
// process a member; nothing that merely reaches the port gets further than
// the handshake.
type TLSFiles struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

type clusterTLS struct {
	server *tls.Config
	client *tls.Config
}

func (f TLSFiles) load() (*clusterTLS, error) {
	if f.CAFile == "" || f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("cluster TLS needs ca_file, cert_file and key_file")
	}
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster CA file %s holds no PEM certificate", f.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster certificate: %w", err)
	}
	// Peers are dialled by whatever address they advertise (often an IP),
	// so the check is the chain to the cluster CA, not the host name.
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return errors.New("peer presented no certificate")
		}
		leaf, err := x509.ParseCertificate(rawCerts[0])
		if err != nil {
			return err
		}
		inter := x509.NewCertPool()
		for _, raw := range rawCerts[1:] {
			if c, err := x509.ParseCertificate(raw); err == nil {
				inter.AddCert(c)
			}
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return fmt.Errorf("peer certificate is not from the cluster CA: %w", err)
		}
		return nil
	}
	return &clusterTLS{
		server: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
		},
		client: &tls.Config{
			MinVersion:            tls.VersionTLS13,
			Certificates:          []tls.Certificate{cert},
			InsecureSkipVerify:    true, // replaced by VerifyPeerCertificate's chain check
			VerifyPeerCertificate: verify,
		},
	}, nil
}

// mux accepts TLS connections on the cluster port and hands each to Raft or
// to the RPC server by its first byte.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	tls       *clusterTLS
	raft      *subListener
	rpc       *subListener
	closeOnce sync.Once
	done      chan struct{}

	// isolated cuts this node off for fault-injection tests: every live
	// cluster connection is closed and new ones are refused.
	isolated atomic.Bool
	connsMu  sync.Mutex
	conns    map[net.Conn]struct{}
}

func (m *mux) track(c net.Conn) net.Conn {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	if m.isolated.Load() {
		// Dialled or accepted while isolate ran: it is cut too (a
		// connection that slipped through kept raft's pipeline, and so
		// VerifyLeader, working on an isolated leader).
		c.Close()
	}
	if m.conns == nil {
		m.conns = map[net.Conn]struct{}{}
	}
	m.conns[c] = struct{}{}
	return &trackedConn{Conn: c, m: m}
}

// isolate closes every cluster connection and refuses new ones while on.
func (m *mux) isolate(on bool) {
	m.isolated.Store(on)
	if !on {
		return
	}
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	for c := range m.conns {
		c.Close()
	}
	m.conns = nil
}

type trackedConn struct {
	net.Conn
	m *mux
}

func (c *trackedConn) Close() error {
	c.m.connsMu.Lock()
	delete(c.m.conns, c.Conn)
	c.m.connsMu.Unlock()
	return c.Conn.Close()
}

func newMux(bind, advertise string, ct *clusterTLS) (*mux, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	adv := ln.Addr()
	if advertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", advertise); err != nil {
			ln.Close()
			return nil, fmt.Errorf("cluster advertise address: %w", err)
		}
	} else if tcp := ln.Addr().(*net.TCPAddr); tcp.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("cluster bind %s is a wildcard address: set advertise to the address peers dial", bind)
	}
	m := &mux{ln: ln, advertise: adv, tls: ct, done: make(chan struct{})}
	m.raft = &subListener{m: m, conns: make(chan net.Conn, 16)}
	m.rpc = &subListener{m: m, conns: make(chan net.Conn, 16)}
	go m.accept()
	return m, nil
}

func (m *mux) accept() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		go m.dispatch(c)
	}
}

func (m *mux) dispatch(c net.Conn) {
	if m.isolated.Load() {
		c.Close()
		return
	}
	tc := tls.Server(c, m.tls.server)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	var first [1]byte
	if err := tc.Handshake(); err != nil {
		tc.Close()
		return
	}
	if _, err := tc.Read(first[:]); err != nil {
		tc.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	var target *subListener
	switch first[0] {
	case protoRaft:
		target = m.raft
	case protoRPC:
		target = m.rpc
	default:
		tc.Close()
		return
	}
	select {
	case target.conns <- m.track(tc):
	case <-m.done:
		tc.Close()
	}
}

// dial opens a mutual-TLS connection to a peer's cluster port and announces proto.
func (m *mux) dial(ctx context.Context, addr string, proto byte) (net.Conn, error) {
	if m.isolated.Load() {
		return nil, errors.New("isolated from the cluster")
	}
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: m.tls.client}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{proto}); err != nil {
		c.Close()
		return nil, err
	}
	return m.track(c), nil
}

func (m *mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
		err = m.ln.Close()
	})
	return err
}

// subListener is the net.Listener one protocol sees.
type subListener struct {
	m     *mux
	conns chan net.Conn
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.m.done:
		return nil, net.ErrClosed
	}
}

func (l *subListener) Close() error   { return l.m.Close() }
func (l *subListener) Addr() net.Addr { return l.m.advertise }

// raftLayer is the raft.StreamLayer over the mux.
type raftLayer struct{ *subListener }

func (r raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return r.m.dial(ctx, string(address), protoRaft)
}

// persistentTransport retries AppendEntries to a follower that cannot be
// reached, for as long as this node leads and the follower is a member,
// instead of returning the error to raft. Raft backs off exponentially on
// every error it sees, up to ~10 s between attempts, and that backoff
// cannot be interrupted or configured: a follower back after a partition
// or a restart then waits that long for the entries it missed (and refuses
// crypto meanwhile). Retrying here at a short, fixed interval keeps raft's
// error count low, so the entries follow within one retry of the heal.
// AppendEntries is idempotent for raft, so repeating one is safe; votes and
// snapshots keep raft's own handling.
type persistentTransport struct {
	*raft.NetworkTransport
	retryEvery time.Duration
	// keepTrying reports whether an AppendEntries to id is still wanted.
	keepTrying func(id raft.ServerID) bool
	stop       <-chan struct{}
}

func (t *persistentTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	for {
		err := t.NetworkTransport.AppendEntries(id, target, args, resp)
		if err == nil || !t.keepTrying(id) {
			return err
		}
		select {
		case <-t.stop:
			return err
		case <-time.After(t.retryEvery):
		}
	}
}
