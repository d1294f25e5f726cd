package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/testlog"
)

func TestBatchWriterWritesEveryInterval(t *testing.T) {
	out := &testlog.Buffer{}
	b := newBatchWriter(out, 20*time.Millisecond)
	defer b.Close()
	if _, err := b.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != "one\n" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := out.String(); got != "one\n" {
		t.Fatalf("after the interval: %q", got)
	}
}

func TestBatchWriterCloseWritesWhatWaits(t *testing.T) {
	out := &testlog.Buffer{}
	b := newBatchWriter(out, time.Hour)
	line := []byte("waiting\n")
	b.Write(line)
	// zerolog reuses its buffer: the writer must have copied the line.
	copy(line, "XXXXXXX\n")
	if out.String() != "" {
		t.Fatal("written before the interval")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "waiting\n" {
		t.Fatalf("after Close: %q", got)
	}
	b.Write([]byte("late\n"))
	if got := out.String(); got != "waiting\nlate\n" {
		t.Fatalf("a write after Close: %q", got)
	}
}

func TestBatchWriterWritesAFullBatchAtOnce(t *testing.T) {
	out := &testlog.Buffer{}
	b := newBatchWriter(out, time.Hour)
	defer b.Close()
	line := []byte(strings.Repeat("x", 1023) + "\n")
	for range batchLimit / len(line) {
		b.Write(line)
	}
	if got := len(out.String()); got != batchLimit {
		t.Fatalf("%d bytes written once %d were waiting", got, batchLimit)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestBatchWriterReportsWriteErrors(t *testing.T) {
	b := newBatchWriter(failingWriter{}, time.Hour)
	b.Write([]byte("lost\n"))
	if err := b.Close(); err == nil {
		t.Fatal("Close hid the write error")
	}
	if _, err := b.Write([]byte("more\n")); err == nil {
		t.Fatal("a write after a failed one succeeded")
	}
}

func TestBatchWriterKeepsLinesWhole(t *testing.T) {
	out := &testlog.Buffer{}
	b := newBatchWriter(out, time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				fmt.Fprintf(b, "goroutine %d line %d %s\n", g, i, strings.Repeat("y", i%200))
			}
		}()
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix([]byte(out.String()), []byte("\n")), []byte("\n"))
	if len(lines) != 8000 {
		t.Fatalf("%d lines, want 8000", len(lines))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		var g, i int
		var pad string
		if n, _ := fmt.Sscanf(string(l), "goroutine %d line %d %s", &g, &i, &pad); n < 2 || (i%200 != 0 && len(pad) != i%200) {
			t.Fatalf("torn line %q", l)
		}
		seen[fmt.Sprint(g, i)] = true
	}
	if len(seen) != 8000 {
		t.Fatalf("%d distinct lines, want 8000", len(seen))
	}
}

// Log lines are stamped to the millisecond: at 1,800 requests/s a second
// holds too many lines to order them.
func TestLoggerStampsMilliseconds(t *testing.T) {
	out := &testlog.Buffer{}
	log, closer, err := NewLogger(LogConfig{Level: "info", Format: "json", FlushInterval: -1}, out)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	log.Info().Msg("x")
	var line struct{ Time string }
	if err := json.Unmarshal([]byte(out.String()), &line); err != nil {
		t.Fatal(err)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000Z07:00", line.Time); err != nil {
		t.Fatalf("time %q is not RFC 3339 with milliseconds: %v", line.Time, err)
	}
}
