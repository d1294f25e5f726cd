package logbridge

import (
	"errors"
	"net"
	"testing"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/internal/testlog"
)

// peerLog records the levels asked of Peer; drop makes it refuse them, as
// a rate limit does.
type peerLog struct {
	log    zerolog.Logger
	levels []zerolog.Level
	drop   bool
}

func (p *peerLog) event(level zerolog.Level) *zerolog.Event {
	p.levels = append(p.levels, level)
	if p.drop {
		return nil
	}
	return p.log.WithLevel(level).Bool("authenticated", false)
}

var errHandshake = errors.New("tls: first record does not look like a TLS handshake")

func newFastHTTP(own, peers *testlog.Buffer) (FastHTTP, *peerLog) {
	p := &peerLog{log: zerolog.New(peers)}
	return FastHTTP{
		Log: zerolog.New(own), Peer: p.event,
		Cut:    func(s string) string { return s[:min(len(s), 20)] },
		Logged: func(err error) bool { return err == errHandshake },
	}, p
}

func TestFastHTTPServingErrorIsAClientsDebugLine(t *testing.T) {
	var own, peers testlog.Buffer
	f, p := newFastHTTP(&own, &peers)
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}
	remote := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 50000}
	f.Printf(fasthttpServingError, local, remote, errors.New("error when reading request headers: cannot find http request method in \"GARBAGE\""))
	m := one(t, &peers)
	want := map[string]any{"level": "debug", "component": "fasthttp", "message": "error when serving connection",
		"local": "127.0.0.1:8443", "remote": "10.1.2.3:50000", "error": "error when reading r", "authenticated": false}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if len(m) != len(want) || own.String() != "" {
		t.Errorf("line %v; own log %q", m, own.String())
	}

	// An error the server logged already, and a line the rate limit refuses,
	// write nothing.
	f.Printf(fasthttpServingError, local, remote, errHandshake)
	p.drop = true
	f.Printf(fasthttpServingError, local, remote, errors.New("x"))
	if len(lines(t, &peers)) != 1 || len(p.levels) != 2 {
		t.Errorf("after a logged error and a refused line: %d lines, Peer asked %d times\n%s", len(lines(t, &peers)), len(p.levels), peers.String())
	}
}

func TestFastHTTPAcceptFailuresAreTheNodes(t *testing.T) {
	var own, peers testlog.Buffer
	f, p := newFastHTTP(&own, &peers)
	f.Printf(fasthttpAcceptTimeout, errors.New("accept tcp: i/o timeout"))
	f.Printf(fasthttpAcceptFailed, errors.New("accept tcp: too many open files"))
	ls := lines(t, &own)
	if len(ls) != 2 || ls[0]["level"] != "warn" || ls[1]["level"] != "error" ||
		ls[1]["error"] != "accept tcp: too many open files" || ls[1]["component"] != "fasthttp" {
		t.Fatalf("own log:\n%s", own.String())
	}
	if len(p.levels) != 0 {
		t.Fatal("a listener failure went through the clients' rate limit")
	}
}

// A message the adapter does not know is kept, bounded, as a client's.
func TestFastHTTPOtherMessagesAreClientsWarnings(t *testing.T) {
	var own, peers testlog.Buffer
	f, _ := newFastHTTP(&own, &peers)
	f.Printf("%.3f %s - %s", 0.5, "#0000000100000001 - 127.0.0.1:8443<->10.1.2.3:50000 - GET http://x/", "boom")
	m := one(t, &peers)
	if m["level"] != "warn" || m["component"] != "fasthttp" || m["message"] != "0.500 #0000000100000" {
		t.Fatalf("logged %v", m)
	}
}
