package faults

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// verdict prints the scenario's one-line result where `make faults` and
// `go test -v` show it, and fails the test unless it passed.
func verdict(t *testing.T, scenario string, pass bool, figures string, args ...any) {
	t.Helper()
	word := "PASS"
	if !pass {
		word = "FAIL"
	}
	line := fmt.Sprintf("VERDICT %s: %s %s", scenario, word, fmt.Sprintf(figures, args...))
	// Straight to stderr, unindented, so that make faults shows it as is.
	fmt.Fprintln(os.Stderr, line)
	if !pass {
		t.Error(line)
	}
}

// figure records one measured value with its name, for the verdict line
// and for bench/RESULTS.md.
type figures []string

func (f *figures) add(name string, format string, args ...any) {
	*f = append(*f, name+"="+fmt.Sprintf(format, args...))
}

func (f figures) String() string { return strings.Join(f, " ") }

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }

// full reports whether the full suite runs (make faults), rather than the
// short version inside make test.
func full() bool { return os.Getenv("XKSPROXY_FAULTS") == "full" }
