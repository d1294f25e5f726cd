package xksapi_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/testmetrics"
	"github.com/xksproxy/xksproxy/xksapi"
)

// An idle-connection flood from one address runs into api.max_conns_per_ip
// and leaves a client at another address served; the idle connections,
// closed by read_timeout, are not logged as malformed requests.
func TestIdleConnectionFloodLeavesOtherClientsServed(t *testing.T) {
	const perIP = 16
	f := newFixture(t, fixtureOptions{configure: func(c *xksapi.Config) {
		c.MaxConnsPerIP = perIP
		c.ReadTimeout = time.Second
	}})
	var flood []net.Conn
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	for range 4 * perIP {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}

	// A client on another loopback address is served.
	good := f.clientA()
	good.HTTP.Transport.(*http.Transport).DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext
	if err := good.RoundTrip("k1", metadata("Encrypt"), []byte("served during the flood"), nil); err != nil {
		t.Fatalf("a client at 127.0.0.2 during a flood from 127.0.0.1: %v", err)
	}
	_, m := testmetrics.Scrape(t, "http://"+f.health+"/metrics")
	if got := m.Value(t, "xksproxy_connections_refused_total", "listener", "api", "limit", "max_conns_per_ip"); got != 3*perIP {
		t.Errorf("connections refused over max_conns_per_ip: %v, want %d", got, 3*perIP)
	}

	// The flood's connections end: the refused ones at once, the others at
	// read_timeout, without a warning about each.
	for _, c := range flood {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("a flood connection was not closed by the server: %v", err)
		}
	}
	if strings.Contains(f.logs.String(), "malformed") {
		t.Errorf("idle connections were logged as malformed requests:\n%s", f.logs.Line("malformed"))
	}
	// Their places are free again.
	plain := f.clientA()
	waitFor(t, "127.0.0.1 to be served again", 5*time.Second, func() bool {
		return plain.RoundTrip("k1", metadata("Encrypt"), []byte("after the flood"), nil) == nil
	})
}
