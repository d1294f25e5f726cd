package bench

import (
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// tlsServer serves h over HTTPS on loopback and returns an endpoint to it
// with at most conns connections.
func tlsServer(t *testing.T, conns int, h http.HandlerFunc) (*httptest.Server, *endpoint) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	return srv, startTLS(t, srv, conns)
}

// startTLS starts srv, configured but not started, over HTTPS and returns
// an endpoint to it with at most conns connections.
func startTLS(t *testing.T, srv *httptest.Server, conns int) *endpoint {
	t.Helper()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	eps, err := newEndpoints(Target{Endpoints: []string{srv.URL}, CAFile: ca}, conns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eps[0].close)
	return eps[0]
}

type outcome struct {
	status int
	body   string
	err    error
}

// post sends a request to ep and returns where its outcome will arrive.
func post(ep *endpoint, path string, timeout time.Duration) <-chan outcome {
	ch := make(chan outcome, 1)
	x := &exchange{deadline: time.Now().Add(timeout), done: func(_ *exchange, status int, body []byte, err error) {
		ch <- outcome{status, string(body), err}
	}}
	x.request = requests.Get().(*[]byte)
	*x.request = appendRequest((*x.request)[:0], ep.host, path, []byte("{}"), "date", "auth")
	ep.do(x)
	return ch
}

func wait(t *testing.T, ch <-chan outcome, within time.Duration) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(within):
		t.Fatalf("no outcome within %v", within)
		return outcome{}
	}
}

func failureName(o outcome) string {
	if o.err == nil {
		return ""
	}
	return classifyTransport(o.err).name
}

// TestEndpointQueuesForAConnection: with every connection busy, requests
// wait; one whose timeout passes meanwhile ends as a timeout, the others
// go out, in order, on the connection that came free.
func TestEndpointQueuesForAConnection(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var seen []string
	remotes := map[string]bool{}
	_, ep := tlsServer(t, 1, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path)
		remotes[r.RemoteAddr] = true
		mu.Unlock()
		if r.URL.Path == "/a" {
			<-release
		}
		w.Write([]byte(r.URL.Path))
	})
	a := post(ep, "/a", 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a is on the wire
	b := post(ep, "/b", 200*time.Millisecond)
	c := post(ep, "/c", 5*time.Second)
	start := time.Now()
	if o := wait(t, b, 2*time.Second); failureName(o) != "timeout" || time.Since(start) > time.Second {
		t.Fatalf("b: %+v after %v, want a timeout after 200ms", o, time.Since(start))
	}
	close(release)
	for name, ch := range map[string]<-chan outcome{"/a": a, "/c": c} {
		if o := wait(t, ch, 2*time.Second); o.err != nil || o.status != 200 || o.body != name {
			t.Errorf("%s: %+v", name, o)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[1] != "/c" || len(remotes) != 1 {
		t.Errorf("server saw %v on %d connections; want /a then /c on one", seen, len(remotes))
	}
}

// TestEndpointCutOff ends requests in flight and waiting at once, refuses
// new ones until restored, and works again after.
func TestEndpointCutOff(t *testing.T) {
	release := make(chan struct{})
	_, ep := tlsServer(t, 1, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			<-release
		}
	})
	defer close(release)
	inFlight := post(ep, "/stall", time.Minute)
	time.Sleep(100 * time.Millisecond)
	waiting := post(ep, "/stall", time.Minute)
	ep.cutOff()
	for _, ch := range []<-chan outcome{inFlight, waiting, post(ep, "/new", time.Minute)} {
		if o := wait(t, ch, time.Second); failureName(o) != "cancelled" {
			t.Errorf("after cutOff: %+v, want cancelled", o)
		}
	}
	ep.restore()
	if o := wait(t, post(ep, "/new", 5*time.Second), 5*time.Second); o.err != nil || o.status != 200 {
		t.Fatalf("after restore: %+v", o)
	}
}

// TestEndpointReplacesConnections: connections the server closes, after an
// answer or while idle, are replaced, with resumed TLS sessions; one whose
// answer timed out is not reused.
func TestEndpointReplacesConnections(t *testing.T) {
	var resumed sync.Map // remote address → whether its handshake resumed a session
	srv, ep := tlsServer(t, 2, func(w http.ResponseWriter, r *http.Request) {
		resumed.Store(r.RemoteAddr, r.TLS.DidResume)
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		}
		w.Write([]byte("ok"))
	})
	for _, path := range []string{"/close", "/close", "/keep", "/close"} {
		if o := wait(t, post(ep, path, 5*time.Second), 5*time.Second); o.err != nil || o.body != "ok" {
			t.Fatalf("%s: %+v", path, o)
		}
	}
	connections, resumptions := 0, 0
	resumed.Range(func(_, v any) bool {
		connections++
		if v.(bool) {
			resumptions++
		}
		return true
	})
	if connections != 3 || resumptions != 2 {
		t.Errorf("%d connections, %d of them resumed; want 3, the last 2 resumed", connections, resumptions)
	}
	srv.CloseClientConnections()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ep.mu.Lock()
		open := ep.open
		ep.mu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still counted open after the server closed them", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if o := wait(t, post(ep, "/keep", 5*time.Second), 5*time.Second); o.err != nil || o.body != "ok" {
		t.Fatalf("after the server closed the idle connection: %+v", o)
	}
	if o := wait(t, post(ep, "/slow", 100*time.Millisecond), 5*time.Second); failureName(o) != "timeout" {
		t.Fatalf("slow answer: %+v, want a timeout", o)
	}
	if o := wait(t, post(ep, "/keep", 5*time.Second), 5*time.Second); o.err != nil || o.body != "ok" {
		t.Fatalf("after a timeout: %+v", o)
	}
}

func TestTransportFailuresNamed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	eps, err := newEndpoints(Target{Endpoints: []string{"https://" + addr}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if o := wait(t, post(eps[0], "/", 5*time.Second), 5*time.Second); failureName(o) != "connection-refused" {
		t.Errorf("closed port: %+v", o)
	}
	// A server whose certificate the bench does not trust.
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	eps, err = newEndpoints(Target{Endpoints: []string{srv.URL}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if o := wait(t, post(eps[0], "/", 5*time.Second), 5*time.Second); failureName(o) != "tls" {
		t.Errorf("untrusted certificate: %+v", o)
	}
}

// TestEndpointStrandsNoRequest races requests against a server that closes
// idle connections almost at once: each request must end, answered or
// failed, never be left on a connection nobody reads.
func TestEndpointStrandsNoRequest(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	srv.Config.IdleTimeout = time.Millisecond
	ep := startTLS(t, srv, 2)
	var outcomes []<-chan outcome
	for i := range 300 {
		outcomes = append(outcomes, post(ep, "/", 10*time.Second))
		time.Sleep(time.Duration(i%3) * 500 * time.Microsecond)
	}
	ok := 0
	for _, ch := range outcomes {
		if o := wait(t, ch, 10*time.Second); o.err == nil && o.body == "ok" {
			ok++
		} else if name := failureName(o); name != "connection-closed" && name != "connection-reset" {
			t.Errorf("%+v (%s)", o, name)
		}
	}
	if ok < 150 {
		t.Errorf("only %d of 300 requests answered", ok)
	}
}

// fill opens every connection before any request, and a request then uses
// one of them; against an endpoint that is down it gives up, counting none.
func TestEndpointFill(t *testing.T) {
	var mu sync.Mutex
	opened := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			opened++
			mu.Unlock()
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	ep := startTLS(t, srv, 20)
	ep.fill(5 * time.Second)
	ep.mu.Lock()
	idle, open := len(ep.idle), ep.open
	ep.mu.Unlock()
	if idle != 20 || open != 20 {
		t.Fatalf("after fill: %d idle, %d open; want 20 and 20", idle, open)
	}
	if o := wait(t, post(ep, "/", 5*time.Second), 5*time.Second); o.err != nil || o.body != "ok" {
		t.Fatalf("request after fill: %+v", o)
	}
	ep.fill(5 * time.Second) // nothing missing: opens nothing
	mu.Lock()
	defer mu.Unlock()
	if opened != 20 {
		t.Errorf("the server saw %d connections, want the 20 fill opened", opened)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + ln.Addr().String()
	ln.Close()
	eps, err := newEndpoints(Target{Endpoints: []string{down}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	eps[0].fill(time.Second)
	if eps[0].open != 0 {
		t.Errorf("after failing to reach a closed port, %d connections counted open", eps[0].open)
	}
}
