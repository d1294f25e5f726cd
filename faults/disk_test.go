package faults

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Scenario 6: one node's raft directory fills up (a small tmpfs mounted
// there). The cluster keeps taking writes and serving; the full node says
// so in its log, stops serving once it falls behind (it must not serve a
// key disabled meanwhile), and catches up once space is freed. A slow disk
// is TestSlowDisk.
func TestDiskFull(t *testing.T) {
	if !full() {
		t.Skip("full run only (make faults)")
	}
	var raftDir string
	f := newFleet(t, suiteStaleness, func(f *fleet) {
		n := f.nodes[2]
		raftDir = filepath.Join(n.dir, "data", "raft")
		if err := os.MkdirAll(raftDir, 0o700); err != nil {
			t.Fatal(err)
		}
		must(t, "mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", raftDir)
		deferCleanup(t, func() { sh(10*time.Second, "umount", "-l", raftDir) })
	})
	full, leader := f.nodes[2], f.leader(30*time.Second)
	if leader == full {
		t.Skip("the node with the small raft directory leads; this scenario wants it a follower")
	}
	// Fill what is left of the tmpfs, in bounded steps.
	filler := filepath.Join(raftDir, "filler")
	fh, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for range 256 {
		if _, err := fh.Write(chunk); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	fh.Close()
	var figs figures
	w := f.startAdminWriter("disk", 100*time.Millisecond, 30)
	acked, refused := w.finish2(30 * time.Second)
	figs.add("admin_acked", "%d", len(acked))
	figs.add("admin_refused", "%d", refused)
	setKey(t, leader, false)
	disabledAt := time.Now()
	served := 0
	answers := tally{}
	for time.Since(disabledAt) < suiteStaleness+8*time.Second {
		_, o := full.encrypt([]byte("x"))
		if time.Since(disabledAt) > suiteStaleness+2*time.Second {
			answers[o.String()]++
			if o.status == 200 {
				served++
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	majorityOK := true
	for _, n := range f.others(full) {
		if _, o := n.encrypt([]byte("x")); o.status != 400 || o.name != "InvalidStateException" {
			majorityOK = false
		}
	}
	reported := full.logHas("no space left on device")
	st, _ := leader.status()
	for _, s := range st.Nodes {
		if s.ID == full.id {
			figs.add("status_full_node", "ready=%v applied=%d reason=%q", s.Ready, s.AppliedIndex, s.NotReady)
		}
	}
	os.Remove(filler)
	freedAt := time.Now()
	caughtUp := eventually(40*time.Second, func() error {
		_, o := full.encrypt([]byte("x"))
		if o.status == 400 && o.name == "InvalidStateException" {
			return nil
		}
		return errors.New(o.String())
	})
	figs.add("freed_to_caught_up", "%s", ms(time.Since(freedAt)))
	figs.add("served_disabled", "%d", served)
	figs.add("full_node_answers", "%s", answers)
	verdict(t, "disk-full", len(acked) > 0 && majorityOK && reported && served == 0 && caughtUp == nil,
		"node=%s log_says_no_space=%v majority_serving=%v %s", full.id, reported, majorityOK, figs)
	setKey(t, leader, true)
}
