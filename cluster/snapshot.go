package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xksproxy/xksproxy/fsm"
)

// maxSnapshotBytes bounds a restored backup.
const maxSnapshotBytes = 256 << 20

// SaveSnapshot writes the replicated state, in the FSM's snapshot format, to
// w. Secrets stay sealed and key material stays wrapped: the file is useless
// without the cluster keys in an HSM, and sufficient with them.
func (n *Node) SaveSnapshot(w io.Writer) error {
	snap, err := n.fsm.Snapshot()
	if err != nil {
		return err
	}
	sink := &writerSink{w: w}
	if err := snap.Persist(sink); err != nil {
		return err
	}
	return sink.err
}

// RestoreSnapshot makes a saved state the cluster's state (disaster
// recovery, typically into a fresh cluster). The leader takes it and
// installs it on every follower; a follower forwards it to the leader.
func (n *Node) RestoreSnapshot(ctx context.Context, data []byte) (uint64, error) {
	if err := fsm.New(nil).Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		return 0, &RuleError{fmt.Errorf("not a snapshot this version can restore: %w", err)}
	}
	if !n.IsLeader() {
		ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
		return n.forward(ctx, "/v1/restore", data)
	}
	return n.restoreLocal(data)
}

func (n *Node) restoreLocal(data []byte) (uint64, error) {
	if !n.IsLeader() {
		return 0, errNotLeader
	}
	// Raft installs the snapshot one past the larger of meta.Index and its
	// own last index. The state is given that index, so that every command
	// after the restore has a higher one than the restored state reports.
	data, at, err := fsm.Reindexed(data, func(saved uint64) uint64 { return max(saved, n.raft.LastIndex()) + 1 })
	if err != nil {
		return 0, &RuleError{fmt.Errorf("not a snapshot this version can restore: %w", err)}
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(len(data)), Index: at - 1}
	if err := n.raft.Restore(meta, bytes.NewReader(data), time.Minute); err != nil {
		return 0, fmt.Errorf("restoring the snapshot: %w", err)
	}
	n.log.Warn().Int("bytes", len(data)).Uint64("index", at).Uint64("raftIndex", n.raft.AppliedIndex()).
		Msg("restored the cluster state from a snapshot")
	return at, nil
}

func (n *Node) restoreRPC(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxSnapshotBytes))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	index, err := n.restoreLocal(data)
	writeApplyResult(w, index, err)
}

// writerSink is a raft.SnapshotSink that only writes.
type writerSink struct {
	w   io.Writer
	err error
}

func (s *writerSink) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil && s.err == nil {
		s.err = err
	}
	return n, err
}

func (s *writerSink) Close() error  { return s.err }
func (s *writerSink) ID() string    { return "xksproxy-backup" }
func (s *writerSink) Cancel() error { s.err = errors.New("snapshot cancelled"); return nil }
