package fsm

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

func TestNodeCertificateRevocationsMoveForwardAndSurviveASnapshot(t *testing.T) {
	s := run(t, RaiseCommandSet{To: CommandSet})
	s = step(t, s, RevokeNodeCertificates{At: t0, NodeID: "node2"})
	s = step(t, s, RevokeNodeCertificates{At: t0.Add(-time.Hour), NodeID: "node2"})
	if got := s.NodeCertificatesRevokedBefore("node2"); !got.Equal(t0) {
		t.Fatalf("an earlier revocation moved the line back: %v", got)
	}
	s = step(t, s, RevokeNodeCertificates{At: t0.Add(time.Hour), NodeID: "node2"})
	if got := s.NodeCertificatesRevokedBefore("node2"); !got.Equal(t0.Add(time.Hour)) {
		t.Fatalf("a later revocation did not move the line: %v", got)
	}
	b := persistState(t, s)
	back := New(nil)
	if err := back.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if got := back.State().NodeCertificatesRevokedBefore("node2"); !got.Equal(t0.Add(time.Hour)) {
		t.Fatalf("restored revocation: %v", got)
	}
	if RequiredCommandSet(RevokeNodeCertificates{At: t0, NodeID: "n"}) != 3 {
		t.Fatal("a revocation must need command set 3: older nodes cannot decode it")
	}
	for name, c := range map[string]Command{
		"no time":  RevokeNodeCertificates{NodeID: "n"},
		"no id":    RevokeNodeCertificates{At: t0},
		"a slash":  RevokeNodeCertificates{At: t0, NodeID: "a/b"},
		"too long": RevokeNodeCertificates{At: t0, NodeID: strings.Repeat("n", maxNodeID+1)},
	} {
		if err := c.Validate(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	forged := strings.Replace(string(b), `"commandSet":3`, `"commandSet":2`, 1)
	if err := New(nil).Restore(io.NopCloser(strings.NewReader(forged))); err == nil {
		t.Fatal("a state with revocations at command set 2 was restored")
	}
}
