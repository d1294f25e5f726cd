package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/fsm"
)

// OperatorURIScheme is the URI SAN scheme of an operator certificate:
// xksproxy-operator://NAME?role=ROLE, issued by the admin client CA (never
// the cluster CA, whose node certificates are not operators).
const OperatorURIScheme = "xksproxy-operator"

// Why a request to the admin API was refused, as the refusal metric counts.
const (
	refusedUnauthenticated = iota // no token, a wrong or revoked token, a certificate that names no operator
	refusedRole                   // the operator's role does not allow the route or the change
	refusedRule                   // the change was refused (a rule, a conflict, a bad request)
	refusalReasons
)

// RefusalReasons names the reasons of Refusals, in its order.
var RefusalReasons = [refusalReasons]string{"unauthenticated", "role", "rule"}

type refusals [refusalReasons]atomic.Uint64

// Refusals counts the admin writes and calls refused since start, by
// reason (RefusalReasons): a rising count of unauthenticated or role
// refusals is someone trying what they may not.
func (a *Server) Refusals() [refusalReasons]uint64 {
	var out [refusalReasons]uint64
	for i := range out {
		out[i] = a.refused[i].Load()
	}
	return out
}

// loadClientCAs reads the admin client CA, which issues operator
// certificates; none configured means no certificate authenticates.
func loadClientCAs(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("admin client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("admin client CA %s holds no PEM certificate", file)
	}
	return pool, nil
}

type actorKey struct{}

// actorOf is the operator a request was authenticated as.
func actorOf(r *http.Request) fsm.Actor {
	a, _ := r.Context().Value(actorKey{}).(fsm.Actor)
	return a
}

// authenticate names the caller: an operator certificate from the admin
// client CA, the bootstrap token of admin.token_file, or a named
// operator's token, in that order.
func (a *Server) authenticate(r *http.Request) (fsm.Actor, error) {
	actor := fsm.Actor{RemoteAddr: r.RemoteAddr, Node: a.nodeID()}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return certificateActor(actor, r.TLS.VerifiedChains[0][0])
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return actor, errors.New("no bearer token and no operator certificate")
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(a.cfg.Token)) == 1 {
		actor.Kind, actor.Name, actor.Role = fsm.ActorBootstrap, fsm.BootstrapOperator, fsm.RoleAdmin
		return actor, nil
	}
	op := a.state().OperatorByToken(fsm.TokenHash(got))
	if op == nil {
		return actor, errors.New("the bearer token is not the bootstrap token nor any operator's (revoked?)")
	}
	actor.Kind, actor.Name, actor.Role, actor.Credential = fsm.ActorToken, op.Name, op.Role, fsm.TokenFingerprint(op.TokenHash)
	return actor, nil
}

// certificateActor reads the operator a verified certificate names in its
// URI SAN xksproxy-operator://NAME?role=ROLE: exactly one such name.
func certificateActor(actor fsm.Actor, cert *x509.Certificate) (fsm.Actor, error) {
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == OperatorURIScheme {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		return actor, fmt.Errorf("the client certificate names %d operators (a URI SAN %s://NAME?role=ROLE); want one", len(found), OperatorURIScheme)
	}
	u := found[0]
	role := fsm.Role(u.Query().Get("role"))
	if u.Host == "" || !role.Valid() {
		return actor, fmt.Errorf("the client certificate's operator %q: want %s://NAME?role=reader|killswitch|operator|admin", u, OperatorURIScheme)
	}
	sum := sha256.Sum256(cert.Raw)
	actor.Kind, actor.Name, actor.Role = fsm.ActorCertificate, u.Host, role
	actor.Credential = "sha256:" + hex.EncodeToString(sum[:8])
	return actor, nil
}

// authorized lets through only a request whose caller authenticates and
// whose role allows the route; every refusal is an audit line and counted.
func (a *Server) authorized(route *admin.Route, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		actor, err := a.authenticate(r)
		if err != nil {
			a.refuse(r, route, actor, refusedUnauthenticated, err)
			writeJSON(w, http.StatusUnauthorized, admin.APIError{Error: "admin API: " + err.Error()})
			return
		}
		if !actor.Role.Allows(fsm.Role(route.Role)) {
			err := fmt.Errorf("%s %s has role %s; %s needs %s", actor.Kind, actor.Name, actor.Role, route.Name, route.Role)
			a.refuse(r, route, actor, refusedRole, err)
			writeJSON(w, http.StatusForbidden, admin.APIError{Error: "admin API: " + err.Error()})
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, actor)))
	})
}

// refuse writes the audit line of a refused call and counts it. Refusals
// are not replicated: an unauthenticated caller must not be able to grow
// every node's state. Reads refused for a role are audited as well: a
// reader probing for what it may not see is worth a line.
func (a *Server) refuse(r *http.Request, route *admin.Route, actor fsm.Actor, reason int, err error) {
	a.refused[reason].Add(1)
	a.log.Warn().Bool("audit", true).Str("node", actor.Node).Str("actorKind", actor.Kind).Str("actor", actor.Name).
		Str("role", string(actor.Role)).Str("credential", actor.Credential).Str("remoteAddr", r.RemoteAddr).
		Str("receivedBy", actor.Node).Str("action", route.Name).Str("method", r.Method).Str("path", r.URL.Path).
		Str("outcome", "refused ("+RefusalReasons[reason]+"): "+err.Error()).Msg("admin change refused")
}

// apply commits cmd as the request's operator asked for it: in an Audited
// envelope, which the leader checks again and whose record joins the
// audit trail in the same log entry. Before the cluster reaches command
// set 3 (an upgrade in progress), older voters could not apply the
// envelope: the change goes bare, and this node's log line is its record.
func (a *Server) apply(r *http.Request, cmd fsm.Command) (uint64, error) {
	actor := actorOf(r)
	if a.state().CommandSet() < 3 {
		index, err := a.n.Apply(r.Context(), cmd)
		if errors.Is(err, fsm.ErrForbidden) && a.n.SyncWithLeader(r.Context()) == nil && a.state().CommandSet() >= 3 {
			// A bare change has no operator to refuse: the leader had
			// reached command set 3 before this node did, and wants the
			// operator named (fsm.CheckNamed).
			return a.applyNamed(r, actor, cmd)
		}
		if err == nil {
			a.unreplicatedAudit(actor, cmd.Type().String()).Uint64("index", index).Msg(unreplicatedMessage)
		}
		return index, err
	}
	return a.applyNamed(r, actor, cmd)
}

const unreplicatedMessage = "admin change (the cluster is below command set 3: not in the replicated trail)"

// unreplicatedAudit is the audit line of a change made while no node keeps
// a trail: below command set 3, the receiving node's log is the record.
func (a *Server) unreplicatedAudit(actor fsm.Actor, action string) *zerolog.Event {
	return a.log.Info().Bool("audit", true).Bool("replicated", false).Str("actorKind", actor.Kind).Str("actor", actor.Name).
		Str("role", string(actor.Role)).Str("remoteAddr", actor.RemoteAddr).Str("receivedBy", actor.Node).
		Str("action", action).Str("outcome", fsm.OutcomeApplied)
}

func (a *Server) applyNamed(r *http.Request, actor fsm.Actor, cmd fsm.Command) (uint64, error) {
	env, err := fsm.NewAudited(actor, cmd)
	if err != nil {
		return 0, err
	}
	return a.n.Apply(r.Context(), env)
}
