package faults

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel here has no netem qdisc, so WAN latency is made in user space:
// in each site's namespace, iptables sends packets for the other sites to an
// NFQUEUE, and a delayer holds each one for a fixed time before accepting
// it. A fixed hold keeps the packets in order. The netlink messages are
// written by hand (linux/netfilter/nfnetlink_queue.h): a Go NFQUEUE library
// is not on the module proxy here, and the protocol needs four messages.
const (
	nfnlSubsysQueue  = 3
	nfqnlMsgPacket   = 0
	nfqnlMsgVerdict  = 1
	nfqnlMsgConfig   = 2
	nfqaPacketHdr    = 1
	nfqaVerdictHdr   = 2
	nfqaCfgCmd       = 1
	nfqaCfgParams    = 2
	nfqnlCfgCmdBind  = 1
	nfqnlCopyMeta    = 1
	nfAccept         = 1
	nlaTypeMask      = 0x3fff
	nlmsgHeaderBytes = 16
)

// delayer holds the packets of one NFQUEUE per site for hold each.
type delayer struct {
	hold  time.Duration
	mu    sync.Mutex
	socks []int
	wg    sync.WaitGroup
	stop  chan struct{}
	held  int64
	fails int64
}

func newDelayer(hold time.Duration) *delayer {
	return &delayer{hold: hold, stop: make(chan struct{})}
}

// attach binds queue in s's namespace and starts holding its packets.
func (d *delayer) attach(s *site, queue uint16) error {
	fd, err := inNamespace(s.fd, func() (int, error) {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	})
	if err != nil {
		return fmt.Errorf("netlink socket in %s: %w", s.ns, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	// A receive timeout lets the reader notice stop.
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	cmd := []byte{nfqnlCfgCmdBind, 0, 0, 0}
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0)
	params[4] = nfqnlCopyMeta
	if err := d.request(fd, nfqnlMsgConfig, queue, unix.NLM_F_ACK, attr(nfqaCfgCmd, cmd), attr(nfqaCfgParams, params)); err != nil {
		unix.Close(fd)
		return fmt.Errorf("binding NFQUEUE %d in %s: %w", queue, s.ns, err)
	}
	d.mu.Lock()
	d.socks = append(d.socks, fd)
	d.mu.Unlock()
	release := make(chan heldPacket, 65536)
	d.wg.Add(2)
	go d.read(fd, release)
	go d.release(fd, queue, release)
	return nil
}

type heldPacket struct {
	id  uint32
	due time.Time
}

func attr(typ uint16, payload []byte) []byte {
	n := 4 + len(payload)
	b := make([]byte, (n+3)&^3)
	binary.LittleEndian.PutUint16(b, uint16(n))
	binary.LittleEndian.PutUint16(b[2:], typ)
	copy(b[4:], payload)
	return b
}

// request sends one nfnetlink message and, with NLM_F_ACK, waits for the ack.
func (d *delayer) request(fd int, msg uint8, queue uint16, flags uint16, attrs ...[]byte) error {
	b := make([]byte, nlmsgHeaderBytes+4)
	for _, a := range attrs {
		b = append(b, a...)
	}
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	binary.LittleEndian.PutUint16(b[4:], nfnlSubsysQueue<<8|uint16(msg))
	binary.LittleEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|flags)
	b[16] = unix.AF_UNSPEC
	binary.BigEndian.PutUint16(b[18:], queue)
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	if flags&unix.NLM_F_ACK == 0 {
		return nil
	}
	buf := make([]byte, 4096)
	for range 10 {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		if n >= nlmsgHeaderBytes+4 && binary.LittleEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR {
			if code := int32(binary.LittleEndian.Uint32(buf[16:])); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
	return errors.New("no netlink ack")
}

// read takes queued packets and hands them to release with their due time.
func (d *delayer) read(fd int, release chan<- heldPacket) {
	defer d.wg.Done()
	defer close(release)
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-d.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
				continue
			}
			return
		}
		now := time.Now()
		for msg := buf[:n]; len(msg) >= nlmsgHeaderBytes; {
			l := int(binary.LittleEndian.Uint32(msg))
			if l < nlmsgHeaderBytes || l > len(msg) {
				break
			}
			if binary.LittleEndian.Uint16(msg[4:]) == nfnlSubsysQueue<<8|nfqnlMsgPacket {
				if id, ok := packetID(msg[nlmsgHeaderBytes+4 : l]); ok {
					release <- heldPacket{id: id, due: now.Add(d.hold)}
				}
			}
			msg = msg[(l+3)&^3:]
		}
	}
}

func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= 4 {
		l := int(binary.LittleEndian.Uint16(attrs))
		if l < 4 || l > len(attrs) {
			return 0, false
		}
		if binary.LittleEndian.Uint16(attrs[2:])&nlaTypeMask == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(attrs[4:]), true
		}
		attrs = attrs[(l+3)&^3:]
	}
	return 0, false
}

// release accepts each packet at its due time, in arrival order.
func (d *delayer) release(fd int, queue uint16, held <-chan heldPacket) {
	defer d.wg.Done()
	v := make([]byte, 8)
	binary.BigEndian.PutUint32(v, nfAccept)
	for p := range held {
		if wait := time.Until(p.due); wait > 0 {
			time.Sleep(wait)
		}
		binary.BigEndian.PutUint32(v[4:], p.id)
		d.mu.Lock()
		if err := d.request(fd, nfqnlMsgVerdict, queue, 0, attr(nfqaVerdictHdr, v)); err != nil {
			d.fails++
		} else {
			d.held++
		}
		d.mu.Unlock()
	}
}

// close stops the delayer; packets still queued in the kernel are dropped
// with the sockets, as a cut link would drop them.
func (d *delayer) close() {
	close(d.stop)
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, fd := range d.socks {
		unix.Close(fd)
	}
	d.socks = nil
}

// delaySites holds every packet from one site to another for hold, in both
// directions: a round trip between two sites gains 2×hold.
func (l *lab) delaySites(hold time.Duration) {
	d := newDelayer(hold)
	for i, s := range l.sites {
		if err := d.attach(s, uint16(i+1)); err != nil {
			d.close()
			l.t.Fatal(err)
		}
	}
	deferCleanup(l.t, d.close)
	for i, s := range l.sites {
		for _, o := range l.sites {
			if o != s {
				must(l.t, "ip", "netns", "exec", s.ns, "iptables", "-A", "DELAY", "-d", o.addr, "-j", "NFQUEUE", "--queue-num", fmt.Sprint(i+1))
			}
		}
	}
	l.delay = d
}

// undelay removes the delay rules (the queues stay bound, unused).
func (l *lab) undelay() {
	for _, s := range l.sites {
		must(l.t, "ip", "netns", "exec", s.ns, "iptables", "-F", "DELAY")
	}
}
