package faults

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// slowIOPS is the write rate the slow disk allows: a bbolt commit (raft's
// log store) is a few writes and two fdatasyncs, so the node stores about
// one batch of entries a second, well under what the leader commits.
const slowIOPS = 2

const blkioRoot = "/sys/fs/cgroup/blkio"

// Scenario 6b: one node's raft directory on a slow disk. This kernel has no
// device-mapper (so no dm-delay), but it has loop devices and cgroup v1
// blkio: the directory is an ext4 file system on a file-backed loop device,
// and the node's serve process sits in a blkio cgroup that allows slowIOPS
// writes a second on that device. The throttle counts the writes a process
// issues itself, and fsync's are; the test measures it before relying on it.
// The cluster keeps serving and taking writes; the slow node falls behind,
// says so, refuses crypto past max_lag, never serves a key disabled
// meanwhile, and catches up once the throttle is lifted.
func TestSlowDisk(t *testing.T) {
	if !full() {
		t.Skip("full run only (make faults)")
	}
	if _, err := os.Stat(filepath.Join(blkioRoot, "blkio.throttle.write_iops_device")); err != nil {
		t.Skipf("no cgroup v1 blkio throttling here (%v)", err)
	}
	for _, tool := range []string{"losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is missing (util-linux, e2fsprogs): %v", tool, err)
		}
	}
	var raftDir, device string
	f := newFleet(t, suiteStaleness, func(f *fleet) {
		n := f.nodes[2]
		raftDir = filepath.Join(n.dir, "data", "raft")
		if err := os.MkdirAll(raftDir, 0o700); err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(f.dir, "slow-disk.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 256<<20); err != nil {
			t.Fatal(err)
		}
		loop := strings.TrimSpace(must(t, "losetup", "--find", "--show", img))
		// Registered first, so it runs last: after the unmount.
		deferCleanup(t, func() { sh(10*time.Second, "losetup", "--detach", loop) })
		must(t, "mkfs.ext4", "-q", "-F", loop)
		must(t, "mount", loop, raftDir)
		deferCleanup(t, func() { sh(10*time.Second, "umount", "-l", raftDir) })
		if err := os.Chmod(raftDir, 0o700); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(loop), "dev"))
		if err != nil {
			t.Fatal(err)
		}
		device = strings.TrimSpace(string(b))
	})
	slow, leader := f.nodes[2], f.leader(30*time.Second)
	if leader == slow {
		t.Skip("the node on the slow disk leads; this scenario wants it a follower")
	}
	cg := newBlkioCgroup(t, fmt.Sprintf("xksf%d-slowdisk", os.Getpid()))
	cg.add(t, slow.proc.Pid)
	var figs figures
	unthrottled, err := cg.syncWriteLatency(raftDir, 20)
	if err != nil {
		t.Fatal(err)
	}
	cg.throttle(t, device, slowIOPS)
	throttled, err := cg.syncWriteLatency(raftDir, 6)
	if err != nil {
		t.Fatal(err)
	}
	figs.add("sync_write_4k", "%s->%s@%diops", ms(unthrottled), ms(throttled), slowIOPS)
	if throttled < 5*unthrottled || throttled < 100*time.Millisecond {
		cg.throttle(t, device, 0)
		t.Skipf("the blkio throttle does not bite here: a 4 KiB synchronous write takes %v unthrottled, %v at %d IOPS", unthrottled, throttled, slowIOPS)
	}

	// Admin writes go on through the leader's site while the key is
	// disabled, so that the slow node has a backlog when the disable comes.
	writeStart := time.Now()
	w := f.startAdminWriter("slow", 100*time.Millisecond, 40)
	time.Sleep(3 * time.Second)
	// The slow node is asked from the moment the disable is sent: its
	// confirmation waits for the slow node, so the CLI returns only once
	// the slow node has the change. The design's bound: a node in contact
	// with the leader may lag it by max_lag (2 s by default) before it
	// refuses; from the commit (within a second of the CLI's start) plus
	// max_lag, never a 200.
	const maxLag = 2 * time.Second
	disabledAt := time.Now()
	sampled := make(chan struct{})
	served, servedWithinMaxLag := 0, 0
	var last200 time.Duration
	answers, early := tally{}, tally{}
	var behind []string
	go func() {
		defer close(sampled)
		for time.Since(disabledAt) < suiteStaleness+8*time.Second {
			_, o := slow.encrypt([]byte("x"))
			if o.status == 200 {
				last200 = time.Since(disabledAt)
			}
			if time.Since(disabledAt) > time.Second+maxLag {
				answers[o.String()]++
				if o.status == 200 {
					served++
				}
			} else {
				early[o.String()]++
				if o.status == 200 {
					servedWithinMaxLag++
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	res := setKey(t, leader, false)
	figs.add("disable_confirmed", "%d/%d_in_%s", res.Confirmed, res.Nodes, res.Elapsed)
	for len(behind) < 3 && time.Since(disabledAt) < suiteStaleness+8*time.Second {
		if st, err := leader.status(); err == nil {
			for _, s := range st.Nodes {
				if s.ID == slow.id && !s.Ready {
					behind = append(behind, fmt.Sprintf("applied=%d,commit=%d,reason=%q", s.AppliedIndex, st.leaderCommit(), s.NotReady))
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	<-sampled
	acked, refused := w.finish2(60 * time.Second)
	figs.add("admin_acked", "%d", len(acked))
	figs.add("admin_refused", "%d", refused)
	if len(acked) > 0 {
		figs.add("admin_write_mean", "%s", ms(time.Since(writeStart)/time.Duration(len(acked))))
	}
	majorityOK := true
	for _, n := range f.others(slow) {
		if _, o := n.encrypt([]byte("x")); o.status != 400 || o.name != "InvalidStateException" {
			majorityOK = false
		}
	}
	reported := slow.logLine("behind the cluster leader")
	cg.throttle(t, device, 0)
	liftedAt := time.Now()
	caughtUp := eventually(60*time.Second, func() error {
		st, err := leader.status()
		if err != nil {
			return err
		}
		for _, s := range st.Nodes {
			if s.ID == slow.id && s.Ready && s.AppliedIndex >= st.leaderCommit() {
				return nil
			}
		}
		return errors.New("behind")
	})
	figs.add("lifted_to_caught_up", "%s", ms(time.Since(liftedAt)))
	figs.add("status_while_behind", "%s", strings.Join(behind, ";"))
	figs.add("served_disabled_past_max_lag", "%d", served)
	figs.add("served_disabled_within_max_lag", "%d", servedWithinMaxLag)
	figs.add("last_200_after_disable_sent", "%s", ms(last200))
	figs.add("slow_node_answers_first_3s", "%s", early)
	figs.add("slow_node_answers_after", "%s", answers)
	figs.add("log", "%q", reported)
	verdict(t, "slow-disk", len(acked) > 0 && majorityOK && reported != "" && served == 0 && caughtUp == nil,
		"node=%s majority_serving=%v reports_behind=%v %s", slow.id, majorityOK, reported != "", figs)
	setKey(t, leader, true)
}

// leaderCommit is the highest commit index any node reports.
func (st clusterStatus) leaderCommit() uint64 {
	var c uint64
	for _, n := range st.Nodes {
		c = max(c, n.CommitIndex)
	}
	return c
}

// blkioCgroup is a cgroup v1 blkio group of the test's own.
type blkioCgroup struct{ dir string }

// newBlkioCgroup makes the group and, at cleanup, moves its processes back
// to the root group and removes it.
func newBlkioCgroup(t *testing.T, name string) *blkioCgroup {
	cg := &blkioCgroup{dir: filepath.Join(blkioRoot, name)}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	deferCleanup(t, func() {
		b, _ := os.ReadFile(filepath.Join(cg.dir, "cgroup.procs"))
		for _, pid := range strings.Fields(string(b)) {
			os.WriteFile(filepath.Join(blkioRoot, "cgroup.procs"), []byte(pid), 0)
		}
		// A process killed a moment ago may still be leaving the group.
		eventually(5*time.Second, func() error { return os.Remove(cg.dir) })
	})
	return cg
}

func (cg *blkioCgroup) add(t *testing.T, pid int) {
	if err := os.WriteFile(filepath.Join(cg.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatal(err)
	}
}

// throttle limits the group's writes on device ("major:minor") to iops a
// second; 0 lifts the limit.
func (cg *blkioCgroup) throttle(t *testing.T, device string, iops int) {
	rule := fmt.Sprintf("%s %d", device, iops)
	if err := os.WriteFile(filepath.Join(cg.dir, "blkio.throttle.write_iops_device"), []byte(rule), 0); err != nil {
		t.Fatal(err)
	}
}

// syncWriteLatency is the mean time of one 4 KiB synchronous write
// (O_DSYNC) into dir by a process in the group, over count writes.
func (cg *blkioCgroup) syncWriteLatency(dir string, count int) (time.Duration, error) {
	file := filepath.Join(dir, "latency-probe")
	defer os.Remove(file)
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec dd if=/dev/zero of=%s bs=4k count=%d oflag=dsync status=none`, cg.dir, file, count)
	start := time.Now()
	if out, err := exec.Command("timeout", "60", "sh", "-c", script).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("dd: %v: %s", err, out)
	}
	return time.Since(start) / time.Duration(count), nil
}
