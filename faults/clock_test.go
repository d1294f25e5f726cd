package faults

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// clockSkew is how far the scenario moves one node's clock: past SigV4's
// 5-minute window, far from any deletion window's rounding.
const clockSkew = 10 * time.Minute

// Scenario 7: one node's clock skewed by minutes, through serve's
// fault-injection offset (XKSPROXY_FAULT_CLOCK_OFFSET; a test hook, since
// Go's wall clock cannot be faked from outside and the machine's clock is
// every process's). First a follower: XKS requests signed with the true time
// are refused by it alone (its 5-minute rule holds against its own clock),
// and a deletion scheduled through it is dated by the leader's clock. Then
// the skewed node leads: deletion dates follow its clock — the leader's clock
// is the cluster's.
func TestClockSkew(t *testing.T) {
	if !full() {
		t.Skip("full run only (make faults)")
	}
	f := newFleet(t, suiteStaleness)
	leader := f.leader(30 * time.Second)
	skewed := f.others(leader)[0]
	var figs figures

	skewed.kill()
	skewed.env = []string{fmt.Sprintf("XKSPROXY_FAULT_CLOCK_OFFSET=%s", clockSkew)}
	skewed.start()
	skewed.waitReady(60 * time.Second)
	warned := skewed.logHas("fault injection: this node's clock is offset by " + clockSkew.String())

	sigv4 := func() (bool, string) {
		ok, answers := true, []string{}
		for _, n := range f.nodes {
			_, o := n.encrypt([]byte("x"))
			answers = append(answers, n.id+"="+o.String())
			if n == skewed {
				ok = ok && o.status == 401 && o.name == "AuthenticationFailedException"
			} else {
				ok = ok && o.status == 200
			}
		}
		return ok, strings.Join(answers, ",")
	}
	sigv4Follower, answers := sigv4()
	figs.add("follower_skewed_answers", "%s", answers)
	// What an operator sees: the refused request's line (the log is
	// written asynchronously, so give it a moment).
	var refusal string
	eventually(5*time.Second, func() error {
		if refusal = skewed.logLine("AuthenticationFailedException"); refusal == "" {
			return errors.New("not logged yet")
		}
		return nil
	})
	var line struct{ Reason string }
	json.Unmarshal([]byte(refusal), &line)
	figs.add("operator_sees", "%q", line.Reason)

	// The leader's view of a proposer whose clock is off.
	leaderWarned := func() bool { return leader.logHas("far from the leader's clock") }

	offsetFollower, err := scheduleThrough(f, leader, skewed, "clock-follower")
	if err != nil {
		t.Fatal(err)
	}
	figs.add("date_offset_via_skewed_follower", "%s", offsetFollower.Round(time.Second))
	datesFollowLeader := offsetFollower.Abs() < 5*time.Second
	figs.add("leader_logs_proposer_offset", "%v", eventually(5*time.Second, func() error {
		if !leaderWarned() {
			return errors.New("no")
		}
		return nil
	}) == nil)

	// Now make the skewed node lead: kill whoever leads until it wins an
	// election (each kill gives it about one chance in two).
	rounds := 0
	for l := f.leader(30 * time.Second); l != skewed && rounds < 6; l = f.leader(30 * time.Second) {
		rounds++
		l.kill()
		f.leader(30*time.Second, l)
		l.start()
		l.waitReady(60 * time.Second)
	}
	figs.add("kills_until_skewed_led", "%d", rounds)
	skewedLed := f.leader(30*time.Second) == skewed
	datesFollowSkewedLeader, sigv4Leader := false, false
	if skewedLed {
		sigv4Leader, answers = sigv4()
		figs.add("leader_skewed_answers", "%s", answers)
		offsetLeader, err := scheduleThrough(f, skewed, f.others(skewed)[0], "clock-leader")
		if err != nil {
			t.Fatal(err)
		}
		figs.add("date_offset_via_true_follower_under_skewed_leader", "%s", offsetLeader.Round(time.Second))
		datesFollowSkewedLeader = (offsetLeader - clockSkew).Abs() < 5*time.Second
	}
	verdict(t, "clock-skew", warned && sigv4Follower && datesFollowLeader && skewedLed && sigv4Leader && datesFollowSkewedLeader,
		"skewed=%s offset=%s warned=%v sigv4_holds=%v dates_follow_leader=%v dates_follow_skewed_leader=%v %s",
		skewed.id, clockSkew, warned, sigv4Follower && sigv4Leader, datesFollowLeader, datesFollowSkewedLeader, figs)
}

// scheduleThrough creates and disables key id through leader, schedules its
// deletion in 7 days through via, and returns how far the recorded date is
// from 7 days after the true time of the request.
func scheduleThrough(f *fleet, leader, via *node, id string) (time.Duration, error) {
	if _, err := leader.cli("key", "create", keyStore, id); err != nil {
		return 0, err
	}
	if _, err := leader.cli("key", "disable", keyStore, id); err != nil {
		return 0, err
	}
	var k struct {
		DeletionDate *time.Time `json:"deletionDate"`
	}
	var before, after time.Time
	// via may not have applied the disable yet: it refuses until it has.
	err := eventually(20*time.Second, func() error {
		before = time.Now()
		err := via.cliJSON(&k, "key", "schedule-deletion", keyStore, id, "--days", "7")
		after = time.Now()
		return err
	})
	if err != nil {
		return 0, err
	}
	if k.DeletionDate == nil {
		return 0, errors.New("schedule-deletion answered no deletion date")
	}
	// The request took after-before; count from its middle.
	return k.DeletionDate.Sub(before.Add(after.Sub(before) / 2).Add(7 * 24 * time.Hour)), nil
}

// logLine returns the node's last log line containing s, or "".
func (n *node) logLine(s string) string {
	fh, err := os.Open(n.logPath)
	if err != nil {
		return ""
	}
	defer fh.Close()
	last := ""
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			last = sc.Text()
		}
	}
	return last
}
