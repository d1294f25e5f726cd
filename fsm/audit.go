package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// MaxAuditRecords is how many audit records the state keeps. Older ones
// leave the state (the anchor keeps the chain verifiable) but not the
// record: every record is also a log line, for a SIEM to keep for as long
// as policy says. 4096 records of about half a kilobyte keep a snapshot
// small while covering months of admin changes.
const MaxAuditRecords = 4096

// AuditRecord is one admin change in the audit trail: who asked, through
// which node, what (the command without its secrets), how it ended and
// when (the leader's clock). Hash covers every other field, Prev among
// them, so that editing, removing or reordering a record breaks the chain.
type AuditRecord struct {
	Seq     uint64          `json:"seq"`
	Index   uint64          `json:"index"` // the Raft index of the entry
	At      time.Time       `json:"at"`
	Actor   Actor           `json:"actor"`
	Action  string          `json:"action"`
	Detail  json.RawMessage `json:"detail"`
	Outcome string          `json:"outcome"` // "applied", or "refused: why"
	Prev    string          `json:"prev"`
	Hash    string          `json:"hash"`
}

// AuditAnchor is where the kept records start: the sequence number and
// hash of the last record that left the state (zero while none has).
type AuditAnchor struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// Outcomes of an audited command.
const OutcomeApplied = "applied"

// computeHash is the record's hash: SHA-256 over its JSON with Hash empty.
// encoding/json writes struct fields in order and Detail compacted, so
// every node computes the same bytes.
func (r AuditRecord) computeHash() string {
	r.Hash = ""
	b, err := json.Marshal(r)
	if err != nil {
		panic("fsm: an audit record does not encode: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// AuditTrail returns the kept audit records, oldest first, and the anchor
// they continue from.
func (s *State) AuditTrail() (AuditAnchor, []*AuditRecord) { return s.auditAnchor, s.audit }

// AuditBreak is the first place where a trail does not verify.
type AuditBreak struct {
	Position int    `json:"position"` // 0-based, in the trail as given
	Seq      uint64 `json:"seq"`      // the sequence number the record claims
	Problem  string `json:"problem"`
}

func (b *AuditBreak) Error() string {
	return fmt.Sprintf("audit record %d (position %d): %s", b.Seq, b.Position, b.Problem)
}

// VerifyAudit checks a trail record by record from its anchor and returns
// the first break, or nil: a record whose content does not match its hash
// was edited; one that does not follow its predecessor (sequence number or
// previous hash) means a record before it was removed, or the order changed.
func VerifyAudit(anchor AuditAnchor, records []*AuditRecord) *AuditBreak {
	prev := anchor
	for i, r := range records {
		if r == nil {
			return &AuditBreak{Position: i, Problem: "the record is missing (null)"}
		}
		if r.computeHash() != r.Hash {
			return &AuditBreak{Position: i, Seq: r.Seq, Problem: "edited: its content does not match its hash"}
		}
		if r.Seq != prev.Seq+1 || r.Prev != prev.Hash {
			return &AuditBreak{Position: i, Seq: r.Seq, Problem: fmt.Sprintf(
				"does not follow record %d: a record was removed or the records were reordered", prev.Seq)}
		}
		prev = AuditAnchor{Seq: r.Seq, Hash: r.Hash}
	}
	return nil
}

// ReadAuditTrail reads the audit trail of a snapshot (the FSM's format)
// without checking anything else, so that a damaged or edited snapshot
// can still be verified: Restore refuses such a snapshot whole.
func ReadAuditTrail(snapshot []byte) (AuditAnchor, []*AuditRecord, error) {
	var in struct {
		Version int `json:"version"`
		State   struct {
			Audit *auditJSON `json:"audit"`
		} `json:"state"`
	}
	if err := json.Unmarshal(snapshot, &in); err != nil {
		return AuditAnchor{}, nil, fmt.Errorf("not a state snapshot: %w", err)
	}
	if in.Version != SnapshotVersion {
		return AuditAnchor{}, nil, fmt.Errorf("snapshot format version %d is not %d", in.Version, SnapshotVersion)
	}
	if in.State.Audit == nil {
		return AuditAnchor{}, nil, nil
	}
	return in.State.Audit.Anchor, in.State.Audit.Records, nil
}

// auditJSON is the trail in snapshots.
type auditJSON struct {
	Anchor  AuditAnchor    `json:"anchor"`
	Records []*AuditRecord `json:"records"`
}

// Audited is an admin change and who asked for it, in one log entry: the
// change applies and its audit record joins the chain together, on every
// node. A change the state refuses at apply time is recorded as refused.
type Audited struct {
	At      time.Time `json:"at"`
	Actor   Actor     `json:"actor"`
	Command []byte    `json:"command"` // the change, as Encode writes it
	inner   Command
}

// NewAudited wraps cmd with the actor who asked for it.
func NewAudited(actor Actor, cmd Command) (Audited, error) {
	b, err := Encode(cmd)
	if err != nil {
		return Audited{}, err
	}
	return Audited{At: time.Now().UTC(), Actor: actor, Command: b, inner: cmd}, nil
}

// Inner is the wrapped change.
func (a Audited) Inner() Command { return a.inner }

func (Audited) Type() CommandType { return CmdAudited }

// withInner decodes the wrapped change (Decode calls it).
func (a Audited) withInner() (Command, error) {
	if len(a.Command) > 0 && CommandType(a.Command[0]) == CmdAudited {
		return nil, invalid("an audited command wraps another audited command")
	}
	inner, err := Decode(a.Command)
	if err != nil {
		return nil, err
	}
	a.inner = inner
	return a, nil
}

// validShape checks what does not depend on the state.
func (a Audited) validShape() error {
	if a.inner == nil {
		return invalid("audited command: nothing wrapped")
	}
	if err := requireTime(a.At); err != nil {
		return err
	}
	if _, ok := RequiredRole(a.inner); !ok {
		return invalid("%s is the nodes' own command; no operator issues it", a.inner.Type())
	}
	return a.Actor.validShape()
}

// Validate checks the actor against the state and the wrapped change's
// own rules: the leader refuses a change here before it is proposed.
func (a Audited) Validate(s *State) error {
	if err := a.validShape(); err != nil {
		return err
	}
	return a.refusal(s)
}

// refusal is why s refuses the change as its actor asked for it, or nil.
func (a Audited) refusal(s *State) error {
	if err := a.Actor.Permit(s, a.inner); err != nil {
		return err
	}
	if err := CheckCommandSet(s, a.inner); err != nil {
		return asInvalid(err)
	}
	return a.inner.Validate(s)
}

func (a Audited) applyTo(t *txn) { a.inner.applyTo(t) }

// execute applies the change when the state allows it, and records the
// attempt either way; a malformed envelope (which the leader never
// proposes) is refused without a record.
func (a Audited) execute(s *State, index uint64) (*State, error) {
	if err := a.validShape(); err != nil {
		return s.withIndex(index), err
	}
	t := newTxn(s, index)
	outcome := OutcomeApplied
	err := a.refusal(s)
	if err == nil {
		a.inner.applyTo(t)
	} else {
		outcome = "refused: " + err.Error()
	}
	action := a.inner.Type().String()
	if r, ok := a.inner.(RecordAction); ok {
		action = r.Action // what was done, rather than that it was recorded
	}
	t.appendAudit(AuditRecord{Index: index, At: a.At, Actor: a.Actor, Action: action,
		Detail: auditDetail(a.Command[1:]), Outcome: outcome})
	return t.next, err
}

// secretFields are the fields of commands that hold secrets or material:
// sealed credential secrets, wrapped key material, token hashes. The audit
// trail never records them, sealed or not.
var secretFields = map[string]bool{"sealedSecret": true, "wrappedMaterial": true, "tokenHash": true}

// auditDetail is a command's JSON without its secret fields. It runs in
// Apply on the entry's bytes, so it is the same on every node.
func auditDetail(payload []byte) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return json.RawMessage(`null`)
	}
	b, err := json.Marshal(redact(v))
	if err != nil {
		return json.RawMessage(`null`)
	}
	return b
}

func redact(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if secretFields[k] {
				delete(v, k)
			} else {
				v[k] = redact(x)
			}
		}
	case []any:
		for i := range v {
			v[i] = redact(v[i])
		}
	}
	return v
}

// appendAudit chains rec onto the trail, dropping the oldest record past
// MaxAuditRecords into the anchor.
func (t *txn) appendAudit(rec AuditRecord) {
	prev := t.next.auditAnchor
	if n := len(t.next.audit); n > 0 {
		last := t.next.audit[n-1]
		prev = AuditAnchor{Seq: last.Seq, Hash: last.Hash}
	}
	rec.Seq, rec.Prev = prev.Seq+1, prev.Hash
	rec.Hash = rec.computeHash()
	trail := append(slices.Clip(t.next.audit), &rec)
	if len(trail) > MaxAuditRecords {
		dropped := trail[0]
		t.next.auditAnchor = AuditAnchor{Seq: dropped.Seq, Hash: dropped.Hash}
		trail = slices.Clip(trail[1:])
	}
	t.next.audit = trail
}

// WithAuditOf returns snapshot data (the FSM's format) whose audit trail is
// current's, continued by rec: a restored backup replaces the keys, key
// stores and operators, but the trail goes on, so that a restore cannot
// rewind it. A cluster without a trail (a fresh one, the target of a
// disaster recovery) continues the backup's instead. The leader calls it
// before it installs a restore, so every node installs the same bytes.
func WithAuditOf(data []byte, current *State, rec AuditRecord) ([]byte, error) {
	f := New(nil)
	if err := f.Restore(nopCloser{bytes.NewReader(data)}); err != nil {
		return nil, err
	}
	restored := *f.State()
	if len(current.audit) > 0 || current.auditAnchor != (AuditAnchor{}) {
		restored.auditAnchor, restored.audit = current.auditAnchor, current.audit
	}
	t := newTxn(&restored, restored.index)
	t.appendAudit(rec)
	var buf bytes.Buffer
	if err := (&snapshot{state: t.next}).Persist(bufferSink{&buf}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
