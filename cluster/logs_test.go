package cluster

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/testlog"
)

// findLine is the first line of b that parses and satisfies match, or nil.
func findLine(b *testlog.Buffer, match func(map[string]any) bool) map[string]any {
	for line := range strings.Lines(b.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && match(m) {
			return m
		}
	}
	return nil
}

// hclogText is the start of a line hclog formatted itself: its own
// timestamp and level in the message.
var hclogText = regexp.MustCompile(`^\d{4}-\d\d-\d\dT|^\[[A-Z]+\]|^memberlist: `)

// A node's log is what pipelines index: every line one JSON object with no
// key twice, raft's and memberlist's lines at the level their libraries
// meant, raft's arguments as fields, and one component on each.
func TestNodeLogLinesAreStructuredWithEachKeyOnce(t *testing.T) {
	c := newGossipCluster(t, 3)
	leader := c.waitLeader()
	gone := c.nodes[0]
	if gone == leader {
		gone = c.nodes[1]
	}
	c.stop(gone)

	var warn map[string]any
	c.waitFor("the leader's raft warning about the stopped voter", 10*time.Second, func() bool {
		warn = findLine(leader.logs, func(m map[string]any) bool {
			// Under load raft may also warn, briefly, about a live voter.
			return m["component"] == "raft" && m["message"] == "failed to contact" && m["server-id"] == gone.id
		})
		return warn != nil
	})
	if warn["level"] != "warn" || warn["server-id"] != gone.id {
		t.Errorf("raft's warning: %v", warn)
	}
	// raft's "time" argument would collide with the timestamp.
	if d, err := time.ParseDuration(warn["raft_time"].(string)); err != nil || d <= 0 {
		t.Errorf("raft_time = %v (%v)", warn["raft_time"], err)
	}
	c.waitFor("memberlist to report the stopped node", 10*time.Second, func() bool {
		return findLine(leader.logs, func(m map[string]any) bool {
			msg, _ := m["message"].(string)
			return m["component"] == "memberlist" && m["level"] == "info" && strings.Contains(msg, gone.id)
		}) != nil
	})

	components := map[string]int{}
	for _, n := range c.nodes {
		for line := range strings.Lines(n.logs.String()) {
			if err := testlog.CheckJSONLine([]byte(line)); err != nil {
				t.Fatalf("%s: %v: %s", n.id, err, line)
			}
			var m map[string]any
			json.Unmarshal([]byte(line), &m)
			comp, _ := m["component"].(string)
			components[comp]++
			if msg, _ := m["message"].(string); hclogText.MatchString(msg) {
				t.Errorf("%s: a library's text was logged whole: %s", n.id, line)
			}
			if _, ok := m["time"].(string); !ok {
				t.Errorf("%s: no timestamp: %s", n.id, line)
			}
		}
	}
	for _, want := range []string{"cluster", "raft", "gossip", "memberlist"} {
		if components[want] == 0 {
			t.Errorf("no %s line in any log; lines by component: %v", want, components)
		}
	}
}
