package sigv4

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// captured is a request exactly as an HTTP server received it.
type captured struct {
	method, path, query string
	hdr                 testHeaders
	body                []byte
}

func (c *captured) request() *Request {
	return &Request{
		Method:  []byte(c.method),
		RawPath: []byte(c.path),
		Query:   []byte(c.query),
		Header:  c.hdr,
		Body:    c.body,
	}
}

// curlSigner runs curl's own SigV4 implementation against a throw-away
// net/http server and returns what arrived. curl shares no code with this
// package, so a request it signs is an independent test vector.
type curlSigner struct {
	t        *testing.T
	srv      *http.Server
	addr     string
	got      chan *captured
	bodyFile string
}

func newCurlSigner(t *testing.T) *curlSigner {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &curlSigner{t: t, addr: ln.Addr().String(), got: make(chan *captured, 1)}
	c.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		path, query, _ := strings.Cut(r.RequestURI, "?")
		hdr := testHeaders{}
		for name, values := range r.Header {
			for _, v := range values {
				hdr.add(name, v)
			}
		}
		// net/http moves Host out of the header map; put back what was sent.
		hdr.add("host", r.Host)
		c.got <- &captured{method: r.Method, path: path, query: query, hdr: hdr, body: body}
		w.WriteHeader(http.StatusOK)
	})}
	go c.srv.Serve(ln)
	t.Cleanup(func() { c.srv.Close() })
	c.bodyFile = filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(c.bodyFile, testBody, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// sign sends one request signed by curl for region and service with the
// given secret and returns it as the server saw it.
func (c *curlSigner) sign(region, service, secret string) *captured {
	c.t.Helper()
	_, port, _ := net.SplitHostPort(c.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", "-sS", "--fail", "--noproxy", "*", "-o", os.DevNull,
		"--resolve", testHost+":"+port+":127.0.0.1",
		"--aws-sigv4", "aws:amz:"+region+":"+service,
		"--user", testAKID+":"+secret,
		"-H", "Content-Type: application/json",
		"-d", "@"+c.bodyFile,
		"http://"+testHost+":"+port+testPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("curl: %v\n%s", err, out)
	}
	select {
	case r := <-c.got:
		return r
	default:
		c.t.Fatal("curl succeeded but the server captured nothing")
		return nil
	}
}

func parseCaptured(t *testing.T, c *captured) (Authorization, time.Time) {
	t.Helper()
	auth, err := ParseAuthorization(c.hdr.Peek("authorization"))
	if err != nil {
		t.Fatalf("curl's Authorization %q: %v", c.hdr.Peek("authorization"), err)
	}
	at, ok := parseAmzDate(c.hdr.Peek("x-amz-date"))
	if !ok {
		t.Fatalf("curl's X-Amz-Date %q", c.hdr.Peek("x-amz-date"))
	}
	return auth, at
}

func TestCurlSignedRequest(t *testing.T) {
	cs := newCurlSigner(t)
	c := cs.sign(testRegion, Service, testSecret)
	auth, at := parseCaptured(t, c)
	t.Logf("curl signed %s %s with SignedHeaders=%s (Host %q)", c.method, c.path, auth.SignedHeaders, c.hdr.Peek("host"))
	if c.method != "POST" || c.path != testPath || string(c.body) != string(testBody) {
		t.Fatalf("captured %s %s with a %d-byte body", c.method, c.path, len(c.body))
	}

	v := NewVerifier()
	verify := func(req *Request, a *Authorization, secret, region string, now time.Time) error {
		return v.Verify(req, a, []byte(secret), region, now)
	}
	wantErr(t, verify(c.request(), &auth, testSecret, testRegion, at), nil)
	wantErr(t, verify(c.request(), &auth, testSecret, testRegion, at.Add(4*time.Minute+59*time.Second)), nil)
	wantErr(t, verify(c.request(), &auth, testSecret, testRegion, at.Add(5*time.Minute+time.Second)), ErrClockSkew)

	t.Run("body byte flipped", func(t *testing.T) {
		req := c.request()
		req.Body = append([]byte(nil), c.body...)
		req.Body[len(req.Body)/2] ^= 0x20
		wantErr(t, verify(req, &auth, testSecret, testRegion, at), ErrSignature)
	})
	t.Run("path byte flipped", func(t *testing.T) {
		req := c.request()
		req.RawPath = []byte(strings.Replace(c.path, "encrypt", "encrypu", 1))
		wantErr(t, verify(req, &auth, testSecret, testRegion, at), ErrSignature)
	})
	t.Run("host byte flipped", func(t *testing.T) {
		req := c.request()
		hdr := c.hdr.clone()
		host := []byte(string(hdr.Peek("host")))
		host[0] ^= 0x01
		hdr.set("host", string(host))
		req.Header = hdr
		wantErr(t, verify(req, &auth, testSecret, testRegion, at), ErrSignature)
	})
	t.Run("date header changed", func(t *testing.T) {
		req := c.request()
		hdr := c.hdr.clone()
		later := at.Add(time.Second)
		if later.Day() != at.Day() {
			later = at.Add(-time.Second)
		}
		hdr.set("x-amz-date", later.Format(AmzDateFormat))
		req.Header = hdr
		wantErr(t, verify(req, &auth, testSecret, testRegion, at), ErrSignature)
	})
	t.Run("content-type changed", func(t *testing.T) {
		if !strings.Contains(string(auth.SignedHeaders), "content-type") {
			t.Skip("this curl does not sign content-type")
		}
		req := c.request()
		hdr := c.hdr.clone()
		hdr.set("content-type", "application/jsoN")
		req.Header = hdr
		wantErr(t, verify(req, &auth, testSecret, testRegion, at), ErrSignature)
	})
	t.Run("wrong secret", func(t *testing.T) {
		wantErr(t, verify(c.request(), &auth, otherSecret, testRegion, at), ErrSignature)
	})
	t.Run("key store in another region", func(t *testing.T) {
		wantErr(t, verify(c.request(), &auth, testSecret, "eu-west-1", at), ErrScope)
	})
	t.Run("curl signed for another region", func(t *testing.T) {
		o := cs.sign("eu-west-1", Service, testSecret)
		a, oat := parseCaptured(t, o)
		wantErr(t, verify(o.request(), &a, testSecret, testRegion, oat), ErrScope)
		wantErr(t, verify(o.request(), &a, testSecret, "eu-west-1", oat), nil)
	})
	t.Run("curl signed for another service", func(t *testing.T) {
		o := cs.sign(testRegion, "kms", testSecret)
		a, oat := parseCaptured(t, o)
		wantErr(t, verify(o.request(), &a, testSecret, testRegion, oat), ErrScope)
	})
	t.Run("curl signed with another secret", func(t *testing.T) {
		o := cs.sign(testRegion, Service, otherSecret)
		a, oat := parseCaptured(t, o)
		wantErr(t, verify(o.request(), &a, testSecret, testRegion, oat), ErrSignature)
		wantErr(t, verify(o.request(), &a, otherSecret, testRegion, oat), nil)
	})
	t.Run("many in a row share the cached key", func(t *testing.T) {
		for i := range 3 {
			o := cs.sign(testRegion, Service, testSecret)
			a, oat := parseCaptured(t, o)
			if err := verify(o.request(), &a, testSecret, testRegion, oat); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
	})
}
