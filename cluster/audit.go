package cluster

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// auditLog writes each audit record that joins the trail as one log line
// with "audit":true, for a SIEM: the state keeps the newest records, the
// SIEM keeps them all. Every node writes the records it applies, so any
// node's log holds the whole trail; a restarted node writes again the
// records of the log entries it replays, with the same hash (a SIEM
// deduplicates on it).
type auditLog struct {
	mu      sync.Mutex
	log     zerolog.Logger
	node    string
	lastSeq uint64
	// live is false until raft has restored its snapshot at start: the
	// records in it were written when they were applied.
	live bool
}

func (l *auditLog) published(s *fsm.State) {
	_, trail := s.AuditTrail()
	l.mu.Lock()
	defer l.mu.Unlock()
	// Most states add no record or one: find the new ones from the end.
	first := len(trail)
	for first > 0 && trail[first-1].Seq > l.lastSeq {
		first--
	}
	for _, r := range trail[first:] {
		if l.live {
			LogAuditRecord(l.log, l.node, r)
		}
		l.lastSeq = r.Seq
	}
}

func (l *auditLog) goLive() {
	l.mu.Lock()
	l.live = true
	l.mu.Unlock()
}

// LogAuditRecord writes r as the audit line of a committed change.
func LogAuditRecord(log zerolog.Logger, node string, r *fsm.AuditRecord) {
	log.Info().Bool("audit", true).Str("node", node).Uint64("seq", r.Seq).Uint64("index", r.Index).
		Time("at", r.At).Str("actorKind", r.Actor.Kind).Str("actor", r.Actor.Name).Str("role", string(r.Actor.Role)).
		Str("credential", r.Actor.Credential).Str("remoteAddr", r.Actor.RemoteAddr).Str("receivedBy", r.Actor.Node).
		Str("action", r.Action).RawJSON("detail", r.Detail).Str("outcome", r.Outcome).Str("prev", r.Prev).Str("hash", r.Hash).
		Msg("admin change")
}

// auditActorParam carries the actor of a restore forwarded to the leader
// (the body is the snapshot itself); a leader that does not know it ignores it.
const auditActorParam = "actor"

func actorQuery(a *fsm.Actor) url.Values {
	b, _ := json.Marshal(a) // strings only
	return url.Values{auditActorParam: {base64.RawURLEncoding.EncodeToString(b)}}
}

func decodeActor(q url.Values) (*fsm.Actor, error) {
	v := q.Get(auditActorParam)
	if v == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil, err
	}
	var a fsm.Actor
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// withRestoreRecord continues the current audit trail into a snapshot the
// leader is about to install at index, with a record of the restore by
// actor (this node when nil: a restore not asked through the admin API): a
// restore replaces the state but cannot rewind the trail. Before command
// set 3 no node keeps a trail, and the snapshot is left as it is.
func (n *Node) withRestoreRecord(data []byte, index uint64, actor *fsm.Actor) ([]byte, error) {
	current := n.fsm.State()
	if current.CommandSet() < 3 {
		return data, nil
	}
	if actor == nil {
		actor = &fsm.Actor{Kind: "node", Name: n.cfg.NodeID, Role: fsm.RoleAdmin, Node: n.cfg.NodeID}
	}
	if !actor.Role.Allows(fsm.RoleAdmin) {
		return nil, &RuleError{&kindedError{fmt.Sprintf("%s %s has role %s; a restore needs admin", actor.Kind, actor.Name, actor.Role), fsm.ErrForbidden}}
	}
	sum := sha256.Sum256(data)
	detail, _ := json.Marshal(map[string]string{"snapshotSha256": hex.EncodeToString(sum[:])})
	rec := fsm.AuditRecord{Index: index, At: n.cfg.Now().UTC(), Actor: *actor, Action: "RestoreSnapshot",
		Detail: detail, Outcome: fsm.OutcomeApplied}
	return fsm.WithAuditOf(data, current, rec)
}

// ruleKinds are the kinds of fsm rule error, as the apply RPC names them so
// that a forwarded refusal keeps its kind (and the operator's HTTP status).
var ruleKinds = map[string]error{"invalid": fsm.ErrInvalid, "notFound": fsm.ErrNotFound,
	"conflict": fsm.ErrConflict, "forbidden": fsm.ErrForbidden}

func ruleKind(err error) string {
	for name, kind := range ruleKinds {
		if errors.Is(err, kind) {
			return name
		}
	}
	return ""
}

// kindedError is a refusal from the leader with the kind it named.
type kindedError struct {
	msg  string
	kind error
}

func (e *kindedError) Error() string { return e.msg }
func (e *kindedError) Unwrap() error { return e.kind }

func forwardedRefusal(res noderpc.ApplyResponse) error {
	if kind := ruleKinds[res.Kind]; kind != nil {
		return &kindedError{res.Error, kind}
	}
	return errors.New(res.Error)
}
