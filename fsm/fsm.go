package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// SnapshotVersion is the snapshot format this build writes and the only one
// it reads. Raise it when the format changes incompatibly, and teach Restore
// the old one for as long as old snapshots may exist.
const SnapshotVersion = 1

// ApplyResult is what Apply returns for every command entry, through the
// proposer's raft.ApplyFuture.Response. Err is a rule violation the command
// met at apply time (another command got there first); the state then is
// unchanged but for its index. Err is nil for a skipped optional command.
type ApplyResult struct {
	Index uint64
	Err   error
}

// FSM is the raft.FSM of the replicated state. Raft calls Apply, Snapshot and
// Restore from one goroutine; State and AppliedIndex may be called from any.
type FSM struct {
	state    atomic.Pointer[State]
	onChange func(*State)
}

var _ raft.FSM = (*FSM)(nil)

// New returns an FSM holding the empty state. onChange, when not nil, is
// called with the new state after every applied command and every Restore,
// on raft's FSM goroutine, so it must return at once (signal a view
// builder; do not build the view there). It is called for commands that
// changed nothing but the index as well, so that a view's index can follow
// the applied index.
func New(onChange func(*State)) *FSM {
	f := &FSM{onChange: onChange}
	f.state.Store(newState())
	return f
}

// State returns the current state without locking.
func (f *FSM) State() *State { return f.state.Load() }

// AppliedIndex is the index of the last command entry applied, or restored
// from a snapshot. Raft's own no-op, barrier and configuration entries never
// reach the FSM, so it can trail raft's commit and applied indexes.
func (f *FSM) AppliedIndex() uint64 { return f.state.Load().index }

// Apply applies one committed entry. An entry this build cannot apply
// safely (corrupt, or of an unknown type without IgnoreIfUnknown) panics:
// a stopped node is repaired by an upgrade or a restart, a replica that
// silently skipped a change serves a key that was disabled everywhere else.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return ApplyResult{Index: l.Index}
	}
	next, err := f.state.Load().applyEntry(l.Index, l.Data)
	f.publish(next)
	return ApplyResult{Index: l.Index, Err: err}
}

func (s *State) applyEntry(index uint64, data []byte) (*State, error) {
	if len(data) > 0 {
		if t := CommandType(data[0]); t.Optional() {
			if _, known := commands[t]; !known {
				return s.withIndex(index), nil
			}
		}
	}
	cmd, err := Decode(data)
	if err == nil {
		if r, ok := cmd.(RaiseCommandSet); ok && r.To > CommandSet {
			err = fmt.Errorf("the cluster's command set was raised to %d and this build reads up to %d: upgrade this node", r.To, CommandSet)
		}
	}
	if err != nil {
		panic(fmt.Sprintf("fsm: cannot apply log entry %d, so this node stops rather than diverge from the cluster: %v", index, err))
	}
	return s.execute(index, cmd)
}

func (f *FSM) publish(s *State) {
	f.state.Store(s)
	if f.onChange != nil {
		f.onChange(s)
	}
}

// Snapshot captures the current state: a pointer, since states never change.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{state: f.state.Load()}, nil
}

// Restore replaces the state with a snapshot's. It decodes everything
// before it swaps, so a bad snapshot leaves the old state in place, and it
// refuses a format version it does not know instead of guessing.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("fsm: reading snapshot: %w", err)
	}
	var head struct {
		Version int             `json:"version"`
		State   json.RawMessage `json:"state"`
	}
	if err := decodeStrict(b, &head); err != nil {
		return fmt.Errorf("fsm: snapshot is not a state snapshot: %w", err)
	}
	if head.Version != SnapshotVersion {
		return fmt.Errorf("fsm: snapshot format version %d is not %d, the only one this build reads; upgrade this node", head.Version, SnapshotVersion)
	}
	s := newState()
	if err := s.UnmarshalJSON(head.State); err != nil {
		return fmt.Errorf("fsm: snapshot version %d: %w", head.Version, err)
	}
	f.publish(s)
	return nil
}

// Reindexed returns snapshot data whose state reports index(saved) as its
// applied index, saved being the index it reported, and that index. A
// snapshot restored by hand (raft's Restore, disaster recovery into a fresh
// cluster) is installed at an index of that cluster's own. Left with the
// index of the cluster it was saved from, a node's state could report more
// than the commands it has applied: a kill switch committed right after the
// restore, at a lower index, would count as applied by every node that had
// merely installed the snapshot.
func Reindexed(data []byte, index func(saved uint64) uint64) ([]byte, uint64, error) {
	f := New(nil)
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		return nil, 0, err
	}
	at := index(f.AppliedIndex())
	var buf bytes.Buffer
	if err := (&snapshot{state: f.State().withIndex(at)}).Persist(bufferSink{&buf}); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), at, nil
}

// bufferSink is a raft.SnapshotSink into memory.
type bufferSink struct{ *bytes.Buffer }

func (bufferSink) ID() string    { return "memory" }
func (bufferSink) Cancel() error { return nil }
func (bufferSink) Close() error  { return nil }

type snapshot struct{ state *State }

// Persist streams the state as {"version":1,"state":{...}}; it runs
// concurrently with Apply, which never touches this state.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	err := json.NewEncoder(sink).Encode(struct {
		Version int    `json:"version"`
		State   *State `json:"state"`
	}{SnapshotVersion, s.state})
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: writing snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
