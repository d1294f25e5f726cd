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
	// protoProbe proves an identity: the handshake is the whole exchange.
	protoProbe byte = 'I'
)

// TLSFiles are a node's cluster credentials: the cluster CA and this node's
// certificate issued by it, naming the node (identity.go). Nothing that
// merely reaches the port gets further than the handshake.
type TLSFiles struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

type clusterTLS struct {
	// server and client check the chain only: the admin API's listener
	// starts from server (AdminTLS), and decides on its own what a client
	// certificate means there.
	server *tls.Config
	client *tls.Config
	// self is this node's identity, from its own certificate.
	self peerIdentity
}

func (f TLSFiles) load(nodeID string) (*clusterTLS, error) {
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
	self, err := identityOf(cert.Leaf)
	if err != nil {
		return nil, fmt.Errorf("cluster certificate %s: %w", f.CertFile, err)
	}
	if self.node != nodeID {
		return nil, fmt.Errorf("cluster certificate %s names node %q, and this node is %q: issue it one with `xksproxy cluster-keys issue %s`", f.CertFile, self.node, nodeID, nodeID)
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
		self: self,
	}, nil
}

// sameCluster refuses, in the handshake, a peer whose certificate names no
// node or a node of another cluster.
func (ct *clusterTLS) sameCluster(leaf *x509.Certificate) error {
	id, err := identityOf(leaf)
	if err != nil {
		return err
	}
	if id.cluster != ct.self.cluster {
		return fmt.Errorf("certificate names node %s of cluster %q, and this is cluster %q", id.node, id.cluster, ct.self.cluster)
	}
	return nil
}

// peerPolicy is what the node decides about a peer once its certificate
// has passed the chain and cluster checks.
type peerPolicy interface {
	// revokedBefore: certificates naming node issued before this are refused.
	revokedBefore(node string) time.Time
	// admitsMember reports whether node may speak Raft and the node RPCs
	// to this one: it is in the current configuration.
	admitsMember(node string) bool
	// raftIDAt names the server the configuration lists at addr.
	raftIDAt(addr string) (string, bool)
	// refused hears of every connection refused after the handshake.
	refused(remote net.Addr, peer string, proto byte, err error)
}

// mux accepts TLS connections on the cluster port and hands each to Raft or
// to the RPC server by its first byte.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	tls       *clusterTLS
	serverTLS *tls.Config
	clientTLS *tls.Config
	policy    peerPolicy
	raft      *subListener
	rpc       *subListener
	closeOnce sync.Once
	done      chan struct{}

	// isolated cuts this node off for fault-injection tests: every live
	// cluster connection is closed and new ones are refused.
	isolated atomic.Bool
	connsMu  sync.Mutex
	conns    map[net.Conn]*trackedConn
}

func (m *mux) track(c net.Conn, peer peerIdentity, proto byte, inbound bool) *trackedConn {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	if m.isolated.Load() {
		// Dialled or accepted while isolate ran: it is cut too (a
		// connection that slipped through kept raft's pipeline, and so
		// VerifyLeader, working on an isolated leader).
		c.Close()
	}
	if m.conns == nil {
		m.conns = map[net.Conn]*trackedConn{}
	}
	tc := &trackedConn{Conn: c, m: m, peer: peer, proto: proto, inbound: inbound}
	m.conns[c] = tc
	return tc
}

// isolate closes every cluster connection and refuses new ones while on.
func (m *mux) isolate(on bool) {
	m.isolated.Store(on)
	if !on {
		return
	}
	m.sweep(func(*trackedConn) bool { return true })
}

// sweep closes the live connections drop picks: those of a peer revoked or
// removed since they were opened, which would otherwise live on.
func (m *mux) sweep(drop func(*trackedConn) bool) {
	m.connsMu.Lock()
	var closing []*trackedConn
	for _, c := range m.conns {
		if drop(c) {
			closing = append(closing, c)
		}
	}
	m.connsMu.Unlock()
	for _, c := range closing {
		c.Close()
	}
}

// trackedConn is a cluster connection and the peer at its other end.
type trackedConn struct {
	net.Conn
	m       *mux
	peer    peerIdentity
	proto   byte
	inbound bool
}

func (c *trackedConn) Close() error {
	c.m.connsMu.Lock()
	delete(c.m.conns, c.Conn)
	c.m.connsMu.Unlock()
	return c.Conn.Close()
}

// newMux binds the cluster port; serve starts accepting on it.
func newMux(bind, advertise string, ct *clusterTLS, policy peerPolicy) (*mux, error) {
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
	m := &mux{ln: ln, advertise: adv, tls: ct, policy: policy, done: make(chan struct{})}
	m.serverTLS = ct.server.Clone()
	m.serverTLS.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
		return ct.sameCluster(chains[0][0])
	}
	m.clientTLS = ct.client.Clone()
	m.clientTLS.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if err := ct.client.VerifyPeerCertificate(raw, chains); err != nil {
			return err
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		return ct.sameCluster(leaf)
	}
	m.raft = &subListener{m: m, conns: make(chan net.Conn, 16)}
	m.rpc = &subListener{m: m, conns: make(chan net.Conn, 16)}
	return m, nil
}

// serve starts accepting connections; the policy must be ready to answer.
func (m *mux) serve() { go m.accept() }

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

// peerOf is the identity of a connection's verified peer certificate.
func peerOf(tc *tls.Conn) (peerIdentity, error) {
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return peerIdentity{}, errors.New("peer presented no certificate")
	}
	return identityOf(certs[0])
}

// dispatch checks who the peer is before either protocol sees a byte from
// it: a revoked certificate is refused everywhere, and Raft only speaks with
// members, so that no certificate outside the configuration can send an
// AppendEntries or InstallSnapshot, however high its term.
func (m *mux) dispatch(c net.Conn) {
	if m.isolated.Load() {
		c.Close()
		return
	}
	tc := tls.Server(c, m.serverTLS)
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
	peer, err := peerOf(tc)
	if err == nil {
		err = revocationError(peer, m.policy.revokedBefore(peer.node))
	}
	if err == nil && first[0] == protoRaft && !m.policy.admitsMember(peer.node) {
		err = fmt.Errorf("node %s is not in the Raft configuration", peer.node)
	}
	if err != nil {
		m.policy.refused(c.RemoteAddr(), peer.node, first[0], err)
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
	case target.conns <- m.track(tc, peer, first[0], true):
	case <-m.done:
		tc.Close()
	}
}

// dialTarget is a peer to dial: its address and the node that must answer
// there ("" for any node of the cluster: a join address). allowRevoked
// still reaches a node whose certificate was revoked, to tell it so.
type dialTarget struct {
	addr, id     string
	allowRevoked bool
}

// dial opens a mutual-TLS connection to a peer's cluster port, checks that
// the certificate that answered names the node expected there, and
// announces proto.
func (m *mux) dial(ctx context.Context, to dialTarget, proto byte) (net.Conn, error) {
	if m.isolated.Load() {
		return nil, errors.New("isolated from the cluster")
	}
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: m.clientTLS}
	c, err := d.DialContext(ctx, "tcp", to.addr)
	if err != nil {
		return nil, err
	}
	peer, err := peerOf(c.(*tls.Conn))
	if err == nil && to.id != "" && peer.node != to.id {
		err = fmt.Errorf("the certificate at %s names node %s, not %s", to.addr, peer.node, to.id)
	}
	if err == nil && !to.allowRevoked {
		err = revocationError(peer, m.policy.revokedBefore(peer.node))
	}
	if err == nil {
		_, err = c.Write([]byte{proto})
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return m.track(c, peer, proto, false), nil
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

// raftLayer is the raft.StreamLayer over the mux. Raft dials by address
// only; the configuration says which server must answer there.
type raftLayer struct{ *subListener }

func (r raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	id, ok := r.m.policy.raftIDAt(string(address))
	if !ok {
		return nil, fmt.Errorf("no server at %s in the Raft configuration", address)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return r.m.dial(ctx, dialTarget{addr: string(address), id: id}, protoRaft)
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
