package server

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/fsm"
)

func (a *Server) listOperators(*http.Request) (any, error) {
	out := []admin.OperatorInfo{}
	for _, op := range a.state().Operators() {
		out = append(out, admin.OperatorInfo{Name: op.Name, Role: admin.Role(op.Role), CreatedAt: op.CreatedAt,
			Token: fsm.TokenFingerprint(op.TokenHash)})
	}
	return out, nil
}

// newToken is 32 random bytes, base64url: its SHA-256 is all the cluster
// keeps, and 256 bits leave nothing to guess from it.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "xks_" + base64.RawURLEncoding.EncodeToString(b)
}

func (a *Server) createOperator(r *http.Request) (any, error) {
	var req admin.CreateOperatorRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	token := newToken()
	change, err := a.everywhere(r, fsm.CreateOperator{At: time.Now().UTC(), Name: req.Name, Role: fsm.Role(req.Role), TokenHash: fsm.TokenHash(token)})
	if err != nil {
		return nil, err
	}
	return admin.NewOperator{Name: req.Name, Role: req.Role, Token: token, Change: change}, nil
}

func (a *Server) revokeOperator(r *http.Request) (any, error) {
	return a.everywhere(r, fsm.RevokeOperator{Name: r.PathValue("name")})
}

// record adds a change that is not a command of the state (a membership
// change, already made) to the audit trail.
func (a *Server) record(r *http.Request, action, subject string) error {
	if a.state().CommandSet() < 3 {
		// No node keeps a trail yet (a new cluster before its first raise,
		// or one mid-upgrade): the change is an audit line of this node,
		// as every other change is then.
		a.unreplicatedAudit(actorOf(r), action).Str("subject", subject).Msg(unreplicatedMessage)
		return nil
	}
	if _, err := a.apply(r, fsm.RecordAction{Action: action, Subject: subject}); err != nil {
		a.log.Error().Err(err).Str("action", action).Msg("the change was made but its audit record was not committed")
		return fmt.Errorf("%s %s was made, but its audit record was not committed: %w", action, subject, err)
	}
	return nil
}

// auditTrail is the node's trail in the API's shape: the same JSON, field
// for field.
func auditTrail(st *fsm.State) admin.AuditTrail {
	anchor, records := st.AuditTrail()
	out := admin.AuditTrail{Anchor: admin.AuditAnchor(anchor), Records: make([]admin.AuditRecord, len(records))}
	for i, r := range records {
		b, err := json.Marshal(r)
		if err == nil {
			err = json.Unmarshal(b, &out.Records[i])
		}
		if err != nil {
			panic(err) // strings, numbers, a time and JSON always round-trip
		}
	}
	return out
}

func (a *Server) listAudit(r *http.Request) (any, error) {
	trail := auditTrail(a.state())
	if v := r.URL.Query().Get("since"); v != "" {
		since, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return nil, badRequest("since: %v (want RFC 3339, e.g. 2026-12-01T00:00:00Z)", err)
		}
		kept := trail.Records[:0]
		for _, rec := range trail.Records {
			if !rec.At.Before(since) {
				kept = append(kept, rec)
			}
		}
		trail.Records = kept
	}
	return trail, nil
}

func (a *Server) verifyAudit(*http.Request) (any, error) {
	anchor, records := a.state().AuditTrail()
	return Verification(anchor, records), nil
}

// Verification is the API's answer for a trail: what the CLI prints for a
// node's trail and for a backup file's alike.
func Verification(anchor fsm.AuditAnchor, records []*fsm.AuditRecord) admin.AuditVerification {
	v := admin.AuditVerification{Records: len(records), Anchor: admin.AuditAnchor(anchor), Verified: true}
	if len(records) > 0 && records[len(records)-1] != nil {
		v.Head = records[len(records)-1].Hash
	}
	if b := fsm.VerifyAudit(anchor, records); b != nil {
		v.Verified, v.Break = false, &admin.AuditBreak{Position: b.Position, Seq: b.Seq, Problem: b.Problem}
	}
	return v
}
