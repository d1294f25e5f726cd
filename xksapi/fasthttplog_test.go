package xksapi_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/testlog"
)

// fasthttp's own line about a connection that sent garbage is a client's:
// marked unauthenticated, at debug (the malformed request has its warning
// already), with the addresses and the error as fields and one component.
func TestFasthttpConnectionErrorIsAStructuredClientLine(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	conn, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: f.certs.Roots(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("NOT HTTP AT ALL\r\n\r\n"))
	io.Copy(io.Discard, conn)
	conn.Close()
	waitFor(t, "fasthttp's line", 5*time.Second, func() bool { return f.logs.Line(`"component":"fasthttp"`) != "" })

	line := f.logs.Line(`"component":"fasthttp"`)
	if err := testlog.CheckJSONLine([]byte(line)); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	var m map[string]any
	json.Unmarshal([]byte(line), &m)
	if m["level"] != "debug" || m["message"] != "error when serving connection" || m["authenticated"] != false ||
		m["local"] != f.addr || !strings.HasPrefix(m["remote"].(string), "127.0.0.1:") || m["error"] == nil {
		t.Fatalf("fasthttp's line: %s", line)
	}
	if malformed := f.logs.Line("refused malformed HTTP request"); !strings.Contains(malformed, `"level":"warn"`) {
		t.Fatalf("the request's own line: %q", malformed)
	}
}
