package logbridge

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/internal/testlog"
)

// lines parses what was logged, failing on a line that is not one JSON
// object or that carries a key twice.
func lines(t *testing.T, b *testlog.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		if err := testlog.CheckJSONLine([]byte(line)); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func one(t *testing.T, b *testlog.Buffer) map[string]any {
	t.Helper()
	ls := lines(t, b)
	if len(ls) != 1 {
		t.Fatalf("%d lines, want 1:\n%s", len(ls), b.String())
	}
	return ls[0]
}

func TestHclogLevels(t *testing.T) {
	for _, tc := range []struct {
		level hclog.Level
		want  string // "": no line
	}{
		{hclog.Trace, "trace"}, {hclog.Debug, "debug"}, {hclog.Info, "info"}, {hclog.Warn, "warn"},
		{hclog.Error, "error"}, {hclog.NoLevel, "info"}, {hclog.Off, ""},
	} {
		var b testlog.Buffer
		Hclog(zerolog.New(&b).Level(zerolog.TraceLevel), "raft").Log(tc.level, "m")
		if tc.want == "" {
			if b.String() != "" {
				t.Errorf("%v logged %s", tc.level, b.String())
			}
			continue
		}
		if got := one(t, &b)["level"]; got != tc.want {
			t.Errorf("hclog %v logged at %v, want %s", tc.level, got, tc.want)
		}
	}
}

// Below the zerolog logger's level nothing is written, and the guards raft
// uses to skip building a line say so.
func TestHclogFollowsTheLoggersLevel(t *testing.T) {
	var b testlog.Buffer
	l := Hclog(zerolog.New(&b).Level(zerolog.InfoLevel), "raft")
	l.Debug("hidden")
	l.Trace("hidden")
	l.Info("shown")
	if m := one(t, &b); m["message"] != "shown" {
		t.Fatalf("logged %v", m)
	}
	if l.IsTrace() || l.IsDebug() || !l.IsInfo() || !l.IsWarn() || !l.IsError() || l.GetLevel() != hclog.Info {
		t.Fatalf("guards at info: trace %v debug %v info %v warn %v error %v, level %v",
			l.IsTrace(), l.IsDebug(), l.IsInfo(), l.IsWarn(), l.IsError(), l.GetLevel())
	}
	if Hclog(zerolog.New(&b).Level(zerolog.Disabled), "raft").GetLevel() != hclog.Off {
		t.Fatal("a disabled logger is not Off")
	}
}

type stringer struct{}

func (stringer) String() string { return "Node at 10.0.0.1:7000 [Candidate]" }

// raft's arguments become typed fields; those named like a key the line
// already has are renamed, so that no key appears twice.
func TestHclogFields(t *testing.T) {
	var b testlog.Buffer
	type serverID string // raft.ServerID is a named string
	log := zerolog.New(&b).With().Timestamp().Str("node", "n1").Logger()
	Hclog(log, "raft").With("peer", "n3").Warn("failed to contact",
		"server-id", serverID("n2"), "time", 1500*time.Millisecond, "term", uint64(7), "tally", 2,
		"error", errors.New("connection refused"), "leader", true, "ratio", 0.5,
		"servers", hclog.Fmt("%d voters", 3), "node", stringer{}, "nothing", nil,
		"level", "x", "message", "y", "component", "z", "peer", "n2")
	m := one(t, &b)
	want := map[string]any{
		"level": "warn", "message": "failed to contact", "component": "raft", "node": "n1",
		"server-id": "n2", "raft_time": "1.5s", "term": float64(7), "tally": float64(2),
		"error": "connection refused", "leader": true, "ratio": 0.5, "servers": "3 voters",
		"raft_node": "Node at 10.0.0.1:7000 [Candidate]", "nothing": nil,
		"raft_level": "x", "raft_message": "y", "raft_component": "z", "peer": "n2",
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %#v, want %#v", k, got, v)
		}
	}
	if _, err := time.Parse(zerolog.TimeFieldFormat, m["time"].(string)); err != nil {
		t.Errorf("time %v is not the timestamp: %v", m["time"], err)
	}
	if len(m) != len(want)+1 {
		t.Errorf("%d fields, want %d: %v", len(m), len(want)+1, m)
	}
}

func TestHclogOddArgumentsAndNames(t *testing.T) {
	var b testlog.Buffer
	l := Hclog(zerolog.New(&b), "raft").Named("snapshot")
	l.Info("m", "index", 1, "dangling")
	m := one(t, &b)
	if m["component"] != "raft.snapshot" || m["index"] != float64(1) || m["EXTRA_VALUE_AT_END"] != "dangling" || l.Name() != "raft.snapshot" {
		t.Fatalf("logged %v", m)
	}
	if l.ResetNamed("fsm").Name() != "fsm" {
		t.Fatal("ResetNamed kept the old name")
	}
}

// memberlist writes through the standard log package with the level and
// its name in the text.
func TestStandardLoggerTakesTheLevelFromTheText(t *testing.T) {
	for _, tc := range []struct {
		line, level, msg string
	}{
		{"[WARN] memberlist: Refuting a suspect message (from: n2)", "warn", "Refuting a suspect message (from: n2)"},
		{"[ERR] memberlist: Failed to send ping: write: refused", "error", "Failed to send ping: write: refused"},
		{"[ERROR] memberlist: x", "error", "x"},
		{"[INFO] memberlist: Suspect n3 has failed, no acks received", "info", "Suspect n3 has failed, no acks received"},
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1", "debug", "Stream connection from=127.0.0.1:1"},
		{"no level here", "info", "no level here"},
	} {
		var b testlog.Buffer
		Hclog(zerolog.New(&b).With().Str("node", "n1").Logger(), "memberlist").StandardLogger(nil).Println(tc.line)
		m := one(t, &b)
		if m["level"] != tc.level || m["message"] != tc.msg || m["component"] != "memberlist" {
			t.Errorf("%q logged %v", tc.line, m)
		}
	}
	var b testlog.Buffer
	Hclog(zerolog.New(&b), "memberlist").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("[DEBUG] memberlist: x")
	if m := one(t, &b); m["level"] != "error" || m["message"] != "x" {
		t.Errorf("forced to error: %v", m)
	}
	var quiet testlog.Buffer
	Hclog(zerolog.New(&quiet).Level(zerolog.InfoLevel), "memberlist").StandardLogger(nil).Print("[DEBUG] memberlist: chatty")
	if quiet.String() != "" {
		t.Errorf("a debug line reached an info log: %s", quiet.String())
	}
}
