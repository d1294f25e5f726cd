package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/internal/noderpc"
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

// backupFormat names a backup file's envelope and its version.
const backupFormat = 1

// Backup is a backup file: the FSM's snapshot, who saved it, and a MAC over
// both under the cluster seal key, which only the cluster's HSMs hold. An
// edited file, or one from a cluster with other cluster keys, fails the MAC.
type Backup struct {
	Format    int             `json:"xksproxyBackup"`
	ClusterID string          `json:"clusterId"` // ClusterID of the saving node
	SavedAt   time.Time       `json:"savedAt"`
	SavedBy   string          `json:"savedBy"` // node id
	Snapshot  json.RawMessage `json:"snapshot"`
	MAC       []byte          `json:"mac"`
}

// The MAC is the digest of the backup's fields, sealed under the cluster
// seal key with its own AAD, so that neither a backup's MAC nor a sealed
// credential can stand in for the other. Unsealing it proves that a holder
// of the seal key made it; the digest inside must then be this file's.
var backupMACAAD = []byte("xksproxy backup MAC v1")

// digest covers every field but the MAC; the snapshot compacted, because
// encoding/json compacts a RawMessage it writes.
func (b *Backup) digest() ([]byte, error) {
	var snap bytes.Buffer
	if err := json.Compact(&snap, b.Snapshot); err != nil {
		return nil, fmt.Errorf("the backup's snapshot is not JSON: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "xksproxy backup %d\x00%s\x00%s\x00%s\x00", b.Format, b.ClusterID, b.SavedAt.UTC().Format(time.RFC3339Nano), b.SavedBy)
	h.Write(snap.Bytes())
	return h.Sum(nil), nil
}

// ClusterID names the cluster by its CA: "sha256:" and the first 16 hex
// digits of the CA certificate's SHA-256. It is for people reading a
// backup; what decides whether a backup is this cluster's is the MAC (a
// cluster rebuilt with a new CA and the same key ceremony restores it).
func (n *Node) ClusterID() (string, error) {
	b, err := os.ReadFile(n.cfg.TLS.CAFile)
	if err != nil {
		return "", fmt.Errorf("cluster CA: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return "", fmt.Errorf("cluster CA file %s holds no PEM certificate", n.cfg.TLS.CAFile)
	}
	sum := sha256.Sum256(block.Bytes)
	return "sha256:" + hex.EncodeToString(sum[:8]), nil
}

// SaveBackup writes the state as a backup file: the snapshot, with a MAC
// made by this node's HSM.
func (n *Node) SaveBackup(w io.Writer) error {
	var snap bytes.Buffer
	if err := n.SaveSnapshot(&snap); err != nil {
		return err
	}
	id, err := n.ClusterID()
	if err != nil {
		return err
	}
	b := Backup{Format: backupFormat, ClusterID: id, SavedAt: time.Now().UTC(), SavedBy: n.cfg.NodeID, Snapshot: snap.Bytes()}
	digest, err := b.digest()
	if err != nil {
		return err
	}
	if b.MAC, err = n.hsm.Seal(digest, backupMACAAD); err != nil {
		return fmt.Errorf("authenticating the backup with this node's HSM: %w", err)
	}
	return json.NewEncoder(w).Encode(&b)
}

// ErrBackupMAC: a backup's MAC does not verify.
var ErrBackupMAC = errors.New("the backup's MAC does not verify: the file was modified, or it is from another cluster (other cluster keys)")

// ErrUnauthenticatedBackup: the file is a bare snapshot, as versions before
// authenticated backups wrote them.
var ErrUnauthenticatedBackup = errors.New("the file has no MAC (a backup written by an older xksproxy, or a bare snapshot), so nothing proves it unmodified; if you trust it, restore it once with --allow-unauthenticated and take a new backup right after")

// OpenBackup reads a backup file and verifies its MAC with this node's HSM,
// returning the snapshot inside. A bare snapshot (no envelope) gives
// ErrUnauthenticatedBackup with the snapshot, for a caller that accepts
// one; a failed MAC gives ErrBackupMAC.
func (n *Node) OpenBackup(file []byte) (*Backup, error) {
	b, err := parseBackup(file)
	if err != nil {
		return b, err
	}
	digest, err := b.digest()
	if err != nil {
		return b, err
	}
	got, err := n.hsm.Unseal(b.MAC, backupMACAAD)
	switch {
	case errors.Is(err, hsm.ErrInvalidCiphertext):
		return b, ErrBackupMAC
	case err != nil:
		return b, fmt.Errorf("checking the backup's MAC with this node's HSM: %w", err)
	case subtle.ConstantTimeCompare(got, digest) != 1:
		return b, ErrBackupMAC
	}
	return b, nil
}

// parseBackup reads the envelope, or recognises a bare snapshot (its
// fields are "version" and "state") and wraps it without a MAC.
func parseBackup(file []byte) (*Backup, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(file, &probe); err != nil {
		return nil, fmt.Errorf("not a backup file: %w", err)
	}
	if _, ok := probe["xksproxyBackup"]; !ok {
		return &Backup{Snapshot: file}, ErrUnauthenticatedBackup
	}
	var b Backup
	dec := json.NewDecoder(bytes.NewReader(file))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("not a backup file: %w", err)
	}
	if b.Format != backupFormat {
		return nil, fmt.Errorf("backup format %d is not %d, the only one this build reads; upgrade this node", b.Format, backupFormat)
	}
	return &b, nil
}

// BackupInfo is `snapshot inspect`: a backup file described without
// restoring it.
type BackupInfo struct {
	ClusterID     string     `json:"clusterId,omitempty"` // of the cluster that saved it
	ThisClusterID string     `json:"thisClusterId"`       // of the cluster asked
	SavedAt       *time.Time `json:"savedAt,omitempty"`
	SavedBy       string     `json:"savedBy,omitempty"`
	// MAC: "verified" (this cluster's HSMs made it for this content),
	// "failed" (modified, or another cluster's), "absent" (a backup of an
	// older version), "unchecked" (the HSM could not answer).
	MAC string `json:"mac"`
	// Valid: the state obeys every rule this version restores with; the
	// counts are known only then.
	Valid       bool   `json:"valid"`
	Index       uint64 `json:"index"`
	KeyStores   int    `json:"keyStores"`
	Credentials int    `json:"credentials"`
	Keys        int    `json:"keys"`
	DeletedKeys int    `json:"deletedKeys"`
	Grants      int    `json:"grants"`
	// Restorable: valid and verified, so `snapshot restore` takes it.
	Restorable bool   `json:"restorable"`
	Problem    string `json:"problem,omitempty"` // the first reason it is not restorable
}

// InspectBackup describes a backup file without restoring it: who saved it,
// what it holds, whether its MAC verifies with this node's HSM and whether
// this version could restore its state. Only a file that is no backup at
// all is an error.
func (n *Node) InspectBackup(file []byte) (BackupInfo, error) {
	b, err := n.OpenBackup(file)
	if b == nil {
		return BackupInfo{}, err
	}
	info := BackupInfo{ClusterID: b.ClusterID, SavedBy: b.SavedBy, MAC: "verified"}
	if !b.SavedAt.IsZero() {
		info.SavedAt = &b.SavedAt
	}
	info.ThisClusterID, _ = n.ClusterID()
	switch {
	case errors.Is(err, ErrUnauthenticatedBackup):
		info.MAC = "absent"
	case errors.Is(err, ErrBackupMAC):
		info.MAC = "failed"
	case err != nil:
		info.MAC = "unchecked"
	}
	if err != nil {
		info.Problem = err.Error()
	}
	f := fsm.New(nil)
	if err := f.Restore(io.NopCloser(bytes.NewReader(b.Snapshot))); err != nil {
		if info.Problem == "" {
			info.Problem = "not a state this version can restore: " + err.Error()
		}
		return info, nil
	}
	st := f.State()
	info.Index, info.Grants, info.Valid = st.Index(), len(st.Grants()), true
	for _, ks := range st.KeyStores() {
		info.KeyStores++
		info.Credentials += len(ks.Credentials)
		for _, k := range st.Keys(ks.Name) {
			if k.Deleted {
				info.DeletedKeys++
			} else {
				info.Keys++
			}
		}
	}
	info.Restorable = info.MAC == "verified"
	return info, nil
}

// RestoreSnapshot makes a saved state the cluster's state (disaster
// recovery, typically into a fresh cluster). The leader takes it and
// installs it on every follower; a follower forwards it to the leader.
// data is the FSM's snapshot: the caller has authenticated the backup.
func (n *Node) RestoreSnapshot(ctx context.Context, data []byte) (uint64, error) {
	return n.RestoreSnapshotBy(ctx, nil, data)
}

// RestoreSnapshotBy is RestoreSnapshot asked for by actor, whom the audit
// trail records (the leader continues the trail into the restored state).
func (n *Node) RestoreSnapshotBy(ctx context.Context, actor *fsm.Actor, data []byte) (uint64, error) {
	if err := fsm.New(nil).Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		return 0, &RuleError{fmt.Errorf("not a snapshot this version can restore: %w", err)}
	}
	if !n.IsLeader() {
		ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
		var query url.Values
		if actor != nil {
			query = actorQuery(actor)
		}
		return n.forward(ctx, noderpc.Restore, query, data)
	}
	return n.restoreLocal(data, actor)
}

func (n *Node) restoreLocal(data []byte, actor *fsm.Actor) (uint64, error) {
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
	if data, err = n.withRestoreRecord(data, at, actor); err != nil {
		return 0, err
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
	actor, err := decodeActor(r.URL.Query())
	if err != nil {
		http.Error(w, "actor: "+err.Error(), http.StatusBadRequest)
		return
	}
	index, err := n.restoreLocal(data, actor)
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
