package bench

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadResponse(t *testing.T) {
	big := strings.Repeat("x", maxResponseBytes+1)
	for _, c := range []struct {
		name, in string
		status   int
		body     string
		keep     bool
		err      error // matched with errors.Is; nil for success
		anyErr   bool  // some other error
	}{
		{name: "length", in: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
			status: 200, body: `{"a":1}`, keep: true},
		{name: "bare LF and no reason", in: "HTTP/1.1 429\nContent-Length: 2\n\nhi", status: 429, body: "hi", keep: true},
		{name: "header case and spaces", in: "HTTP/1.1 200 OK\r\ncontent-length:   3  \r\n\r\nabc", status: 200, body: "abc", keep: true},
		{name: "connection close", in: "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx",
			status: 200, body: "x", keep: false},
		{name: "HTTP/1.0", in: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", keep: false},
		{name: "chunked with extension and trailer",
			in:     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: 1\r\n\r\n",
			status: 200, body: "abc0123456789", keep: true},
		{name: "until close", in: "HTTP/1.1 500 Oops\r\n\r\nthe end", status: 500, body: "the end", keep: false},
		{name: "interim answers skipped", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			status: 200, keep: true},
		{name: "no content", in: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, keep: true},
		{name: "closed before the answer", in: "", err: io.EOF},
		{name: "closed in the headers", in: "HTTP/1.1 200 OK\r\nContent-Le", err: io.ErrUnexpectedEOF},
		{name: "closed in the body", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", err: io.ErrUnexpectedEOF},
		{name: "closed in a chunk", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", err: io.ErrUnexpectedEOF},
		{name: "too large by length", in: "HTTP/1.1 200 OK\r\nContent-Length: 65537\r\n\r\n", err: errResponseTooLarge},
		{name: "too large in chunks", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n", err: errResponseTooLarge},
		{name: "too large until close", in: "HTTP/1.1 200 OK\r\n\r\n" + big, err: errResponseTooLarge},
		{name: "not HTTP", in: "SSH-2.0-OpenSSH\r\n\r\n", anyErr: true},
		{name: "bad status", in: "HTTP/1.1 2x0 OK\r\n\r\n", anyErr: true},
		{name: "bad length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", anyErr: true},
		{name: "conflicting lengths", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", anyErr: true},
		{name: "other transfer encoding", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", anyErr: true},
		{name: "header without colon", in: "HTTP/1.1 200 OK\r\nbogus\r\n\r\n", anyErr: true},
		{name: "bad chunk size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", anyErr: true},
		{name: "chunk without its CRLF", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", anyErr: true},
		{name: "protocol switch", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", anyErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body, keep, err := readResponse(bufio.NewReaderSize(strings.NewReader(c.in), 4096), nil)
			switch {
			case c.err != nil || c.anyErr:
				if err == nil || (c.err != nil && !errors.Is(err, c.err)) {
					t.Fatalf("err %v, want %v", err, c.err)
				}
			case err != nil:
				t.Fatal(err)
			case status != c.status || string(body) != c.body || keep != c.keep:
				t.Fatalf("status %d body %q keep %v; want %d %q %v", status, body, keep, c.status, c.body, c.keep)
			}
		})
	}
}

// TestReadResponseKeepAlive reads answers one after the other from one
// connection: each read takes exactly its own answer.
func TestReadResponseKeepAlive(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader(
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"+
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"+
			"HTTP/1.1 400 Bad\r\nContent-Length: 5\r\n\r\nthree"), 4096)
	var buf []byte
	for _, want := range []string{"one", "two", "three"} {
		_, body, keep, err := readResponse(br, buf[:0])
		if err != nil || string(body) != want || !keep {
			t.Fatalf("body %q keep %v err %v, want %q", body, keep, err, want)
		}
		buf = body
	}
	if _, _, _, err := readResponse(br, nil); err != io.EOF {
		t.Fatalf("after the last answer: %v, want EOF", err)
	}
}

func TestAppendRequest(t *testing.T) {
	got := string(appendRequest(nil, "127.0.0.1:8443", "/p/kms/xks/v1/health", []byte(`{"a":1}`), "20261123T000000Z", "AWS4-HMAC-SHA256 x"))
	want := "POST /p/kms/xks/v1/health HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nContent-Type: application/json\r\nContent-Length: 7\r\n" +
		"X-Amz-Date: 20261123T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 x\r\n\r\n{\"a\":1}"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
