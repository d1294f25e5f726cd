package admin

import (
	"context"
	"encoding/json"
	"net/url"
	"time"
)

// OperatorInfo is a named operator; its token is never listed.
type OperatorInfo struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	// Token names the token without revealing it (the first 16 hex digits
	// of its SHA-256), as the audit trail names it.
	Token string `json:"token"`
}

// CreateOperatorRequest names a new operator and its role.
type CreateOperatorRequest struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// NewOperator is the one answer that carries an operator's token.
type NewOperator struct {
	Name  string `json:"name"`
	Role  Role   `json:"role"`
	Token string `json:"token"`
	// Change is the creation's confirmation: the token works on a node
	// once that node has confirmed.
	Change Change `json:"change"`
}

// AuditActor is who asked for a change, and through which node.
type AuditActor struct {
	Kind       string `json:"kind"` // token, bootstrap, certificate (node: a restore not asked through the API)
	Name       string `json:"name"`
	Role       Role   `json:"role"`
	Credential string `json:"credential,omitempty"`
	RemoteAddr string `json:"remoteAddr"`
	Node       string `json:"node"`
}

// AuditRecord is one admin change in the trail. Hash is the SHA-256 of the
// record's JSON with an empty hash; Prev is the hash of the record before.
type AuditRecord struct {
	Seq     uint64          `json:"seq"`
	Index   uint64          `json:"index"`
	At      time.Time       `json:"at"`
	Actor   AuditActor      `json:"actor"`
	Action  string          `json:"action"`
	Detail  json.RawMessage `json:"detail"`
	Outcome string          `json:"outcome"`
	Prev    string          `json:"prev"`
	Hash    string          `json:"hash"`
}

// AuditAnchor is where the kept trail starts: the last record the state
// no longer keeps (zero while it keeps them all).
type AuditAnchor struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// AuditTrail is the kept trail, oldest first.
type AuditTrail struct {
	Anchor  AuditAnchor   `json:"anchor"`
	Records []AuditRecord `json:"records"`
}

// AuditBreak is the first record where a trail stops verifying.
type AuditBreak struct {
	Position int    `json:"position"`
	Seq      uint64 `json:"seq"`
	Problem  string `json:"problem"`
}

// AuditVerification is the result of checking a trail's chain.
type AuditVerification struct {
	Verified bool        `json:"verified"`
	Records  int         `json:"records"`
	Anchor   AuditAnchor `json:"anchor"`
	Head     string      `json:"head"` // the newest record's hash
	Break    *AuditBreak `json:"break,omitempty"`
}

// ListOperators lists the named operators.
func (c *Client) ListOperators(ctx context.Context) ([]OperatorInfo, error) {
	return call[[]OperatorInfo](ctx, c, ListOperators, nil)
}

// CreateOperator creates a named operator; the answer holds its token.
func (c *Client) CreateOperator(ctx context.Context, req CreateOperatorRequest) (NewOperator, error) {
	return call[NewOperator](ctx, c, CreateOperator, req)
}

// RevokeOperator revokes a named operator's token on every node.
func (c *Client) RevokeOperator(ctx context.Context, name string) (Change, error) {
	return call[Change](ctx, c, RevokeOperator, nil, name)
}

// ListAudit returns the audit trail; since, when not zero, keeps the
// records from that time on.
func (c *Client) ListAudit(ctx context.Context, since time.Time) (AuditTrail, error) {
	var q url.Values
	if !since.IsZero() {
		q = url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}}
	}
	data, err := c.raw(ctx, ListAudit, q, nil)
	if err != nil {
		return AuditTrail{}, err
	}
	var out AuditTrail
	return out, json.Unmarshal(data, &out)
}

// VerifyAudit checks the node's audit trail.
func (c *Client) VerifyAudit(ctx context.Context) (AuditVerification, error) {
	return call[AuditVerification](ctx, c, VerifyAudit, nil)
}
