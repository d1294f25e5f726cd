package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xksproxy/xksproxy/fsm"
)

// trailBackup is a backup file (the envelope snapshot save writes) whose
// state holds an audit trail of four records.
func trailBackup(t *testing.T) []byte {
	t.Helper()
	f := fsm.New(nil)
	boot := fsm.Actor{Kind: fsm.ActorBootstrap, Name: fsm.BootstrapOperator, Role: fsm.RoleAdmin, RemoteAddr: "127.0.0.1:1", Node: "node1"}
	cmds := []fsm.Command{fsm.RaiseCommandSet{To: 3}}
	for _, subject := range []string{"node2", "node3", "node4", "node5"} {
		a, err := fsm.NewAudited(boot, fsm.RecordAction{Action: "JoinNode", Subject: subject})
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, a)
	}
	for i, c := range cmds {
		b, err := fsm.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if res := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}).(fsm.ApplyResult); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	snap, _ := f.Snapshot()
	var sink memorySink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	backup, err := json.Marshal(map[string]any{"xksproxyBackup": 1, "clusterId": "c", "savedAt": time.Now(), "savedBy": "node1",
		"snapshot": json.RawMessage(bytes.TrimSpace(sink.Bytes())), "mac": []byte("not checked offline")})
	if err != nil {
		t.Fatal(err)
	}
	return backup
}

type memorySink struct{ bytes.Buffer }

func (*memorySink) ID() string    { return "memory" }
func (*memorySink) Cancel() error { return nil }
func (*memorySink) Close() error  { return nil }

// editTrail rewrites the records of a backup's trail with edit.
func editTrail(t *testing.T, backup []byte, edit func([]json.RawMessage) []json.RawMessage) []byte {
	t.Helper()
	var file map[string]json.RawMessage
	var snap struct {
		Version int                        `json:"version"`
		State   map[string]json.RawMessage `json:"state"`
	}
	var trail struct {
		Anchor  json.RawMessage   `json:"anchor"`
		Records []json.RawMessage `json:"records"`
	}
	if json.Unmarshal(backup, &file) != nil || json.Unmarshal(file["snapshot"], &snap) != nil || json.Unmarshal(snap.State["audit"], &trail) != nil {
		t.Fatal("not a backup with a trail")
	}
	trail.Records = edit(trail.Records)
	var err error
	if snap.State["audit"], err = json.Marshal(trail); err != nil {
		t.Fatal(err)
	}
	if file["snapshot"], err = json.Marshal(snap); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// `audit verify --file` names the first record of a backup that was
// edited, removed or reordered, with exit status 4, and passes the
// untouched file.
func TestAuditVerifyFindsTheFirstBrokenRecordOfABackup(t *testing.T) {
	backup := trailBackup(t)
	verify := func(data []byte) (string, error) {
		path := filepath.Join(t.TempDir(), "backup.snap")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := auditCommand(&cliOptions{})
		cmd.SetArgs([]string{"verify", "--file", path})
		err := cmd.Execute()
		if err == nil {
			return "", nil
		}
		return err.Error(), err
	}
	if msg, err := verify(backup); err != nil {
		t.Fatalf("the untouched backup: %s", msg)
	}
	for name, c := range map[string]struct {
		edit func([]json.RawMessage) []json.RawMessage
		want string
	}{
		"edited": {func(r []json.RawMessage) []json.RawMessage {
			r[1] = bytes.Replace(r[1], []byte("node3"), []byte("node9"), 1)
			return r
		}, "at record 2 (position 1): edited"},
		"removed": {func(r []json.RawMessage) []json.RawMessage {
			return append(r[:1], r[2:]...)
		}, "at record 3 (position 1): does not follow record 1"},
		"reordered": {func(r []json.RawMessage) []json.RawMessage {
			r[2], r[3] = r[3], r[2]
			return r
		}, "at record 4 (position 2): does not follow record 2"},
	} {
		msg, err := verify(editTrail(t, backup, c.edit))
		var exit *exitError
		if !errors.As(err, &exit) || exitStatus(err) != exitAuditBroken || !strings.Contains(msg, c.want) {
			t.Errorf("%s: exit %d, %q; want status %d and %q", name, exitStatus(err), msg, exitAuditBroken, c.want)
		}
	}
}
