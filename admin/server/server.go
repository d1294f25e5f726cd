// Package server serves a node's admin API: authentication, one log line
// per request, and a handler for every route of admin.Routes, built on the
// node API of package cluster (see admin/DESIGN.md).
package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/cluster"
	"github.com/xksproxy/xksproxy/fsm"
)

// Config is the operator API's listener. It serves HTTPS with the node's
// cluster certificate and admits a request that carries the bootstrap
// token, a named operator's token, or an operator certificate from the
// admin client CA (auth.go).
type Config struct {
	Listen string // default 127.0.0.1:7100 is the caller's choice
	Token  string // the bootstrap operator's (admin.token_file), role admin
	// ClientCAFile is the admin client CA (admin.client_ca_file), which
	// issues operator certificates; empty: no certificate authenticates.
	ClientCAFile string
	// AckTimeout bounds how long a kill-switch change waits for every
	// node's confirmation; 0 means 5s.
	AckTimeout time.Duration
	// OnError hears of the listener failing (not of its closing), as the
	// XKS listeners report theirs; nil only logs it.
	OnError func(error)
}

// Server is a running admin API.
type Server struct {
	n    *cluster.Node
	cfg  Config
	log  zerolog.Logger
	srv  *http.Server
	addr net.Addr
	// refused counts refusals by reason (auth.go).
	refused refusals
	tls     atomic.Pointer[tls.Config] // each handshake's; ReloadTLS swaps it
}

// Serve starts node n's admin API; it stops with Close.
func Serve(n *cluster.Node, cfg Config, log zerolog.Logger) (*Server, error) {
	if len(cfg.Token) < 16 {
		return nil, errors.New("the admin token must be at least 16 characters")
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	a := &Server{n: n, cfg: cfg, log: log}
	if err := a.ReloadTLS(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	a.addr = ln.Addr()
	// Bounded so that idle or trickling connections cannot pile up; the
	// write bound leaves room for a pprof profile (?seconds= under 110)
	// and a snapshot download.
	a.srv = &http.Server{Handler: a.routes(), TLSConfig: a.listenerTLS(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: time.Minute, WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute}
	go func() {
		err := a.srv.ServeTLS(ln, "", "")
		if errors.Is(err, http.ErrServerClosed) {
			return
		}
		a.log.Error().Err(err).Str("listener", "admin").Msg("listener failed")
		if cfg.OnError != nil {
			cfg.OnError(fmt.Errorf("admin listener: %w", err))
		}
	}()
	return a, nil
}

// Addr is the bound address of the listener.
func (a *Server) Addr() net.Addr { return a.addr }

// Close stops the listener and every connection.
func (a *Server) Close() error { return a.srv.Close() }

// httpError carries a status with a message for the operator.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

type handlerFunc func(r *http.Request) (any, error)

// binding is what serves a route: h answers JSON (and is logged as an admin
// request); raw writes the answer itself (a file, a profile, the document).
type binding struct {
	h   handlerFunc
	raw http.HandlerFunc
}

// bindings pairs every route of admin.Routes with its handler; the paths,
// methods and sync choices are the route table's.
func (a *Server) bindings() map[*admin.Route]binding {
	return map[*admin.Route]binding{
		admin.ListKeyStores:    {h: a.listKeyStores},
		admin.CreateKeyStore:   {h: a.createKeyStore},
		admin.ShowKeyStore:     {h: a.showKeyStore},
		admin.EnableKeyStore:   {h: a.setKeyStoreEnabled(true)},
		admin.DisableKeyStore:  {h: a.setKeyStoreEnabled(false)},
		admin.ListCredentials:  {h: a.listCredentials},
		admin.AddCredential:    {h: a.addCredential},
		admin.RemoveCredential: {h: a.removeCredential},
		admin.ListKeys:         {h: a.listKeys},
		admin.CreateKey:        {h: a.createKey},
		admin.ShowKey:          {h: a.showKey},
		admin.EnableKey:        {h: a.setKeyEnabled(true)},
		admin.DisableKey:       {h: a.setKeyEnabled(false)},
		admin.RotateKey:        {h: a.rotateKey},
		admin.ScheduleDeletion: {h: a.scheduleDeletion},
		admin.CancelDeletion:   {h: a.cancelDeletion},
		admin.ListGrants:       {h: a.listGrants},
		admin.AddGrant:         {h: a.addGrant},
		admin.RemoveGrant:      {h: a.removeGrant},
		admin.CheckHSMLabels:   {h: a.checkHSMLabels},
		admin.GetClusterStatus: {h: a.clusterStatus},
		admin.JoinNode:         {h: a.join},
		admin.RemoveNode:       {h: a.remove},
		admin.SaveSnapshot:     {raw: a.saveSnapshot},
		admin.RestoreSnapshot:  {h: a.restoreSnapshot},
		admin.InspectSnapshot:  {raw: a.inspectSnapshot},
		admin.ListOperators:    {h: a.listOperators},
		admin.CreateOperator:   {h: a.createOperator},
		admin.RevokeOperator:   {h: a.revokeOperator},
		admin.ListAudit:        {h: a.listAudit},
		admin.VerifyAudit:      {h: a.verifyAudit},
		admin.Profile:          {raw: profile},
		admin.OpenAPI:          {raw: openAPI},
	}
}

func (a *Server) routes() http.Handler {
	mux := http.NewServeMux()
	bindings := a.bindings()
	for _, route := range admin.Routes {
		b, ok := bindings[route]
		switch {
		case !ok:
			panic("admin route " + route.Name + " has no handler")
		case b.raw != nil:
			mux.Handle(route.Method+" "+route.Pattern, a.authorized(route, b.raw))
		default:
			a.handle(mux, route, b.h)
		}
	}
	return mux
}

func (a *Server) handle(mux *http.ServeMux, route *admin.Route, h handlerFunc) {
	mux.Handle(route.Method+" "+route.Pattern, a.authorized(route, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var out any
		stale, err := staleRead(route, r)
		if err == nil && route.Sync != admin.NoSync && !stale {
			err = a.n.SyncWithLeader(r.Context())
		}
		if route.StatesFreshness() {
			a.stateFreshness(w)
		}
		if err == nil || route.Sync == admin.SyncTry {
			out, err = h(r)
		}
		ev := a.log.Info()
		if err != nil {
			ev = a.log.Warn().Err(err)
		}
		ev.Str("method", r.Method).Str("path", r.URL.Path).Str("actor", actorOf(r).Name).Bool("stale", stale).Dur("took", time.Since(start)).Msg("admin request")
		if err != nil {
			status := errorStatus(err)
			if r.Method != http.MethodGet {
				reason := refusedRule
				if status == http.StatusForbidden {
					reason = refusedRole
				}
				a.refuse(r, route, actorOf(r), reason, err)
			}
			writeJSON(w, status, admin.APIError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, out)
	})))
}

// staleRead reports whether r asks route for a stale read: this node's
// state as it is, without the leader.
func staleRead(route *admin.Route, r *http.Request) (bool, error) {
	v := r.URL.Query().Get(admin.StaleParam)
	if !route.Stale || v == "" {
		return false, nil
	}
	stale, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("%s=%q: want true or false", admin.StaleParam, v)
	}
	return stale, nil
}

// stateFreshness says in w's headers how current this node is as it reads
// the state for the answer: its applied index (the answer holds every
// change up to it) and how long ago it heard from the leader.
func (a *Server) stateFreshness(w http.ResponseWriter) {
	w.Header().Set(admin.AppliedIndexHeader, strconv.FormatUint(a.n.AppliedIndex(), 10))
	w.Header().Set(admin.LeaderContactAgeHeader, strconv.FormatInt(a.n.LeaderContactAge().Milliseconds(), 10))
}

func errorStatus(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, fsm.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, fsm.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, fsm.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, fsm.ErrInvalid):
		return http.StatusBadRequest
	}
	var rule *cluster.RuleError
	if errors.As(err, &rule) {
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// state is the node's state; a server without a node (its unit tests)
// knows no operators.
func (a *Server) state() *fsm.State {
	if a.n == nil {
		return fsm.New(nil).State()
	}
	return a.n.State()
}

func (a *Server) nodeID() string {
	if a.n == nil {
		return ""
	}
	return a.n.NodeID()
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return badRequest("request body: %v", err)
	}
	return nil
}

func (a *Server) store(r *http.Request) (*fsm.StoredKeyStore, error) {
	ks := a.n.State().KeyStore(r.PathValue("ks"))
	if ks == nil {
		return nil, &httpError{http.StatusNotFound, "no key store " + r.PathValue("ks")}
	}
	return ks, nil
}

func keyStoreInfo(st *fsm.State, ks *fsm.StoredKeyStore, now time.Time) admin.KeyStoreInfo {
	info := admin.KeyStoreInfo{Name: ks.Name, URIPath: ks.URIPath, Region: ks.Region, Enabled: ks.Enabled,
		QuotaRPS: int(ks.QuotaRPS), GrantsMode: string(ks.GrantsMode), KeyMode: string(ks.KeyMode),
		Credentials: credentialInfos(ks, now), Keys: len(st.Keys(ks.Name))}
	return info
}

func credentialInfos(ks *fsm.StoredKeyStore, now time.Time) []admin.CredentialInfo {
	out := make([]admin.CredentialInfo, 0, len(ks.Credentials))
	for _, c := range ks.Credentials {
		ci := admin.CredentialInfo{AccessKeyID: c.AccessKeyID, CreatedAt: c.CreatedAt}
		if !c.ExpiresAt.IsZero() {
			t := c.ExpiresAt
			ci.ExpiresAt = &t
			ci.Expired = !now.Before(t)
		}
		out = append(out, ci)
	}
	return out
}

func (a *Server) listKeyStores(*http.Request) (any, error) {
	st := a.n.State()
	out := []admin.KeyStoreInfo{}
	for _, ks := range st.KeyStores() {
		out = append(out, keyStoreInfo(st, ks, time.Now()))
	}
	return out, nil
}

func (a *Server) showKeyStore(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	return keyStoreInfo(a.n.State(), ks, time.Now()), nil
}

func (a *Server) createKeyStore(r *http.Request) (any, error) {
	var req admin.CreateKeyStoreRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.URIPath == "" {
		req.URIPath = "/" + req.Name + "/kms/xks/v1"
	}
	if req.Region == "" {
		return nil, badRequest("region is required")
	}
	mode := fsm.GrantsClosed
	if req.GrantsMode != "" {
		mode = fsm.GrantsMode(req.GrantsMode)
	}
	// Checked here as well as by the command: uint32 would wrap a larger
	// int into range.
	if req.QuotaRPS < 0 || req.QuotaRPS > fsm.MaxQuotaRPS {
		return nil, badRequest("quota %d requests/s is out of range (0 for unlimited, at most %d)", req.QuotaRPS, fsm.MaxQuotaRPS)
	}
	cred := fsm.GenerateCredential()
	if req.Credential != nil {
		cred = fsm.Credential{AccessKeyID: req.Credential.AccessKeyID, Secret: []byte(req.Credential.SecretAccessKey)}
		if err := cred.Validate(); err != nil {
			return nil, badRequest("imported credential: %v", err)
		}
	}
	sealed, err := a.n.SealCredential(req.Name, cred.AccessKeyID, cred.Secret, time.Time{})
	if err != nil {
		return nil, err
	}
	keyMode := fsm.KeyModeReplicated
	if req.KeyMode != "" {
		keyMode = fsm.KeyMode(req.KeyMode)
	}
	ks := fsm.StoredKeyStore{Name: req.Name, URIPath: req.URIPath, Region: req.Region, Enabled: true,
		QuotaRPS: uint32(req.QuotaRPS), GrantsMode: mode, KeyMode: keyMode,
		Credentials: []fsm.StoredCredential{sealed}}
	index, err := a.apply(r, fsm.CreateKeyStore{At: time.Now().UTC(), KeyStore: ks})
	if err != nil {
		return nil, err
	}
	// Through a follower the leader committed it, and this node may not
	// have applied it yet: its answer must describe the new key store.
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.AckTimeout)
	defer cancel()
	a.n.WaitViewIndex(ctx, index)
	st := a.n.State()
	created := st.KeyStore(req.Name)
	if created == nil {
		created = &ks
	}
	secret := string(cred.Secret)
	if req.Credential != nil {
		// The caller has it already; an answer is one more place to leak it.
		secret = ""
	}
	return admin.CreateKeyStoreResponse{
		KeyStore:   keyStoreInfo(st, created, time.Now()),
		Credential: newCredential(&ks, cred.AccessKeyID, secret, nil),
	}, nil
}

func newCredential(ks *fsm.StoredKeyStore, akid, secret string, expires *time.Time) admin.NewCredential {
	nc := admin.NewCredential{KeyStore: ks.Name, AccessKeyID: akid, SecretAccessKey: secret, ExpiresAt: expires}
	nc.KMSConsole.XksProxyURIPath = ks.URIPath
	nc.KMSConsole.Credential.AccessKeyID = akid
	nc.KMSConsole.Credential.RawSecretAccessKey = secret
	return nc
}

// everywhere commits cmd and waits until every node serves it: the kill
// switch returns only once each node has confirmed, or says who did not.
func (a *Server) everywhere(r *http.Request, cmd fsm.Command) (admin.Change, error) {
	start := time.Now()
	index, err := a.apply(r, cmd)
	if err != nil {
		return admin.Change{}, err
	}
	return a.confirm(r.Context(), start, index), nil
}

// confirm waits until every node serves index, up to AckTimeout, and says
// how long each took; a node that did not confirm is named with why and
// with the latest time it stops serving by itself (its staleness limit).
func (a *Server) confirm(ctx context.Context, start time.Time, index uint64) admin.Change {
	actx, cancel := context.WithTimeout(ctx, a.cfg.AckTimeout)
	defer cancel()
	acks := a.n.WaitApplied(actx, index)
	res := admin.Change{Index: index, Nodes: len(acks), Acks: make([]admin.Ack, len(acks))}
	for i, ack := range acks {
		res.Acks[i] = admin.Ack(ack)
		if ack.Confirmed {
			res.Confirmed++
		}
	}
	res.Elapsed = time.Since(start).Round(time.Microsecond).String()
	return res
}

func (a *Server) setKeyStoreEnabled(enabled bool) handlerFunc {
	return func(r *http.Request) (any, error) {
		if _, err := a.store(r); err != nil {
			return nil, err
		}
		return a.everywhere(r, fsm.UpdateKeyStore{Name: r.PathValue("ks"), Enabled: &enabled})
	}
}

func (a *Server) listCredentials(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	return credentialInfos(ks, time.Now()), nil
}

func (a *Server) addCredential(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	var req admin.AddCredentialRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	var expires time.Time
	if req.ExpiresAt != nil {
		expires = req.ExpiresAt.UTC()
		if !expires.After(time.Now()) {
			return nil, badRequest("expiresAt is in the past")
		}
	}
	cred := fsm.GenerateCredential()
	sealed, err := a.n.SealCredential(ks.Name, cred.AccessKeyID, cred.Secret, expires)
	if err != nil {
		return nil, err
	}
	if _, err := a.apply(r, fsm.AddCredential{At: time.Now().UTC(), KeyStore: ks.Name, Credential: sealed}); err != nil {
		return nil, err
	}
	return newCredential(ks, cred.AccessKeyID, string(cred.Secret), req.ExpiresAt), nil
}

func (a *Server) removeCredential(r *http.Request) (any, error) {
	return a.everywhere(r, fsm.RemoveCredential{At: time.Now().UTC(), KeyStore: r.PathValue("ks"), AccessKeyID: r.PathValue("akid")})
}

func keyInfo(k *fsm.Key) admin.KeyInfo {
	info := admin.KeyInfo{KeyStore: k.KeyStore, ID: k.ID, Usage: k.Usage.Names(), Enabled: k.Enabled,
		CurrentVersion: k.CurrentVersion, CreatedAt: k.CreatedAt, Deleted: k.Deleted}
	if !k.DeletionDate.IsZero() {
		d := k.DeletionDate
		info.DeletionDate = &d
	}
	for _, v := range k.Versions {
		info.Versions = append(info.Versions, admin.VersionInfo{Number: v.Number, HSMLabel: v.HSMLabel,
			Wrapped: len(v.WrappedMaterial) > 0, CreatedAt: v.CreatedAt})
	}
	if l := k.Legacy; l != nil {
		info.Legacy = &admin.LegacyFormat{Format: l.Format, Version: l.Version}
		if len(l.StaticMetadata) > 0 {
			info.Legacy.StaticMetadataB64 = base64.StdEncoding.EncodeToString(l.StaticMetadata)
		}
	}
	return info
}

func (a *Server) listKeys(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	out := []admin.KeyInfo{}
	for _, k := range a.n.State().Keys(ks.Name) {
		out = append(out, keyInfo(k))
	}
	return out, nil
}

func (a *Server) showKey(r *http.Request) (any, error) {
	k := a.n.State().Key(r.PathValue("ks"), r.PathValue("key"))
	if k == nil {
		return nil, &httpError{http.StatusNotFound, "no key " + r.PathValue("ks") + "/" + r.PathValue("key")}
	}
	return keyInfo(k), nil
}

func (a *Server) createKey(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	var req admin.CreateKeyRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if len(req.Usage) == 0 {
		req.Usage = fsm.DefaultUsage.Names()
	}
	usage, err := fsm.ParseUsage(req.Usage)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if a.n.State().Key(ks.Name, req.ID) != nil {
		return nil, &httpError{http.StatusConflict, "key " + ks.Name + "/" + req.ID + " already exists"}
	}
	v, err := a.n.FirstVersion(ks.KeyMode, ks.Name, req.ID, req.HSMLabel)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if ks.KeyMode == fsm.KeyModeShared {
		// Adopting a label is safe only if every live node's HSM holds it:
		// otherwise some node would fail every request for the key.
		if missing := a.n.NodesLacking(r.Context(), v.HSMLabel); len(missing) > 0 {
			return nil, &httpError{http.StatusConflict, fmt.Sprintf("HSM label %q is not visible on %s; import the key there first", v.HSMLabel, strings.Join(missing, ", "))}
		}
	}
	key := fsm.Key{KeyStore: ks.Name, ID: req.ID, Usage: usage, Enabled: true, CurrentVersion: 1, Versions: []fsm.KeyVersion{v}}
	if req.Legacy != nil {
		if ks.KeyMode != fsm.KeyModeShared || req.HSMLabel == "" {
			return nil, badRequest("a key in another proxy's format adopts that proxy's HSM object: it needs a shared key store and hsmLabel")
		}
		static, err := base64.StdEncoding.Strict().DecodeString(req.Legacy.StaticMetadataB64)
		if err != nil {
			return nil, badRequest("legacy staticMetadataB64: %v", err)
		}
		key.Legacy = &fsm.LegacyFormat{Format: req.Legacy.Format, Version: 1, StaticMetadata: static}
	}
	start := time.Now()
	index, err := a.apply(r, fsm.CreateKey{At: time.Now().UTC(), Key: key})
	if err != nil {
		return nil, err
	}
	// The key is answered once every reachable node serves it (its
	// material unwrapped into each HSM), so that a script may use it at
	// once through any node; the answer names the nodes that do not yet.
	change := a.confirm(r.Context(), start, index)
	info := keyInfo(&key)
	if k := a.n.State().Key(ks.Name, req.ID); k != nil {
		info = keyInfo(k)
	}
	info.Confirmation = &change
	return info, nil
}

// rotateKey adds a version and makes it current in two phases, so that no
// node is asked to encrypt with material it lacks: the new version first
// reaches every node's HSM (each reachable node confirms its view and
// reports nothing missing), and only then becomes current. A node that is
// down catches up before it turns ready again. Old versions stay forever.
func (a *Server) rotateKey(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	k := a.n.State().Key(ks.Name, r.PathValue("key"))
	if k == nil {
		return nil, &httpError{http.StatusNotFound, "no key " + ks.Name + "/" + r.PathValue("key")}
	}
	var req admin.RotateKeyRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	number := k.Versions[len(k.Versions)-1].Number + 1
	var v fsm.KeyVersion
	switch {
	case ks.KeyMode == fsm.KeyModeShared && req.HSMLabel == "":
		return nil, badRequest("key store %s uses shared HSM keys: create the new version's key in every HSM, then name its label (hsmLabel)", ks.Name)
	case ks.KeyMode == fsm.KeyModeShared:
		// As at key creation: adopting a label that some node's HSM lacks
		// would have that node fail every Encrypt once it is current.
		if missing := a.n.NodesLacking(r.Context(), req.HSMLabel); len(missing) > 0 {
			return nil, &httpError{http.StatusConflict, fmt.Sprintf("HSM label %q is not visible on %s; import the key there first", req.HSMLabel, strings.Join(missing, ", "))}
		}
		v = fsm.KeyVersion{Number: number, HSMLabel: req.HSMLabel}
	case req.HSMLabel != "":
		return nil, badRequest("key store %s replicates material: the cluster generates the new version; leave hsmLabel out", ks.Name)
	default:
		if v, err = a.n.NewVersion(ks.Name, k.ID, number); err != nil {
			return nil, fmt.Errorf("generating the new version's material: %w", err)
		}
	}
	added, err := a.everywhere(r, fsm.AddKeyVersion{At: time.Now().UTC(), KeyStore: ks.Name, KeyID: k.ID, Version: v})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.AckTimeout)
	defer cancel()
	statuses := a.n.WaitReconciled(ctx, added.Index)
	for _, st := range statuses {
		if st.State == "" {
			continue // unreachable: it catches up (and unwraps) before it is ready again
		}
		for _, m := range st.KeysMissingDetail {
			if m.KeyStore == ks.Name && m.KeyID == k.ID && m.Version == number {
				return nil, fmt.Errorf("version %d was added but %s cannot hold it (%s); it is not current", number, st.ID, m)
			}
		}
	}
	return a.everywhere(r, fsm.SetCurrentVersion{KeyStore: ks.Name, KeyID: k.ID, Version: number})
}

// maxLabelChecks bounds one label check: each label costs a call to every
// reachable voter.
const maxLabelChecks = 1000

func (a *Server) checkHSMLabels(r *http.Request) (any, error) {
	var req admin.HSMLabelsRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if len(req.Labels) > maxLabelChecks {
		return nil, badRequest("%d labels; check at most %d at a time", len(req.Labels), maxLabelChecks)
	}
	out := make([]admin.HSMLabelCheck, 0, len(req.Labels))
	for _, label := range req.Labels {
		if label == "" {
			return nil, badRequest("an empty HSM label")
		}
		missing := a.n.NodesLacking(r.Context(), label)
		if missing == nil {
			missing = []string{}
		}
		out = append(out, admin.HSMLabelCheck{Label: label, MissingOn: missing})
	}
	return out, nil
}

func (a *Server) scheduleDeletion(r *http.Request) (any, error) {
	var req admin.ScheduleDeletionRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ks, id := r.PathValue("ks"), r.PathValue("key")
	index, err := a.apply(r, fsm.ScheduleDeletion{At: a.n.Now().UTC(), KeyStore: ks, KeyID: id, Days: req.Days})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.AckTimeout)
	defer cancel()
	a.n.WaitViewIndex(ctx, index)
	return keyInfo(a.n.State().Key(ks, id)), nil
}

func (a *Server) cancelDeletion(r *http.Request) (any, error) {
	ks, id := r.PathValue("ks"), r.PathValue("key")
	index, err := a.apply(r, fsm.CancelDeletion{KeyStore: ks, KeyID: id})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.AckTimeout)
	defer cancel()
	a.n.WaitViewIndex(ctx, index)
	return keyInfo(a.n.State().Key(ks, id)), nil
}

func (a *Server) setKeyEnabled(enabled bool) handlerFunc {
	return func(r *http.Request) (any, error) {
		return a.everywhere(r, fsm.SetKeyEnabled{KeyStore: r.PathValue("ks"), KeyID: r.PathValue("key"), Enabled: enabled})
	}
}

func grantInfo(g *fsm.Grant) admin.GrantInfo {
	ops := g.Operations
	if len(ops) == 0 {
		ops = fsm.AllOperations.Names()
	}
	return admin.GrantInfo{ID: g.ID, KeyStore: g.KeyStore, KeyID: g.KeyID, Principals: g.Principals, Accounts: g.Accounts,
		Regions: g.Regions, ViaServices: g.ViaServices, SourceVPCs: g.SourceVPCs, SourceVPCEs: g.SourceVPCEs, Operations: ops}
}

func (a *Server) listGrants(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	out := []admin.GrantInfo{}
	for _, g := range a.n.State().Grants() {
		if g.KeyStore == ks.Name {
			out = append(out, grantInfo(g))
		}
	}
	return out, nil
}

func (a *Server) addGrant(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	var req admin.GrantInfo
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	id := make([]byte, 6)
	rand.Read(id)
	g := fsm.Grant{ID: "g-" + hex.EncodeToString(id), KeyStore: ks.Name, KeyID: req.KeyID, Principals: req.Principals,
		Accounts: req.Accounts, Regions: req.Regions, ViaServices: req.ViaServices, SourceVPCs: req.SourceVPCs,
		SourceVPCEs: req.SourceVPCEs, Operations: req.Operations}
	change, err := a.everywhere(r, fsm.AddGrant{At: time.Now().UTC(), Grant: g})
	if err != nil {
		return nil, err
	}
	info := grantInfo(&g)
	info.Confirmation = &change
	return info, nil
}

func (a *Server) removeGrant(r *http.Request) (any, error) {
	g := a.n.State().Grant(r.PathValue("id"))
	if g == nil || g.KeyStore != r.PathValue("ks") {
		return nil, &httpError{http.StatusNotFound, "no grant " + r.PathValue("id") + " in key store " + r.PathValue("ks")}
	}
	return a.everywhere(r, fsm.RemoveGrant{ID: g.ID})
}

func (a *Server) clusterStatus(r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	nodes, _ := a.n.Statuses(ctx)
	st := admin.ClusterStatus{Nodes: make([]admin.NodeStatus, len(nodes)), CommandSet: a.n.State().CommandSet()}
	for i, n := range nodes {
		st.Nodes[i] = nodeStatus(n)
	}
	for _, m := range a.n.Members() {
		st.Fleet = append(st.Fleet, admin.FleetStatus{ID: m.ID, State: m.State, APIAddr: m.APIAddr, HSMStatus: m.HSMStatus,
			Ready: m.Ready, AppliedIndex: m.AppliedIndex, KeysReady: m.KeysReady})
	}
	if id, addr := a.n.Leader(); addr != "" {
		st.Leader = &admin.LeaderInfo{ID: id, ClusterAddr: addr}
		for _, n := range nodes {
			if n.ID == id {
				st.Leader.APIAddress = n.APIAddr
			}
		}
	}
	return st, nil
}

// saveSnapshot writes a backup file (the state and its MAC), after catching
// up with the leader so that the backup holds every committed change.
func (a *Server) saveSnapshot(w http.ResponseWriter, r *http.Request) {
	// ?stale=true takes this node's state as it is: the way out when the
	// cluster has lost its quorum and no leader can confirm anything.
	stale, err := staleRead(admin.SaveSnapshot, r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, admin.APIError{Error: err.Error()})
		return
	}
	if !stale {
		if err := a.n.SyncWithLeader(r.Context()); err != nil {
			a.stateFreshness(w)
			writeJSON(w, http.StatusServiceUnavailable, admin.APIError{Error: err.Error() + " (save with --stale to take this node's state as it is)"})
			return
		}
	}
	a.stateFreshness(w)
	var buf bytes.Buffer
	if err := a.n.SaveBackup(&buf); err != nil {
		writeJSON(w, http.StatusInternalServerError, admin.APIError{Error: err.Error()})
		return
	}
	a.log.Info().Int("bytes", buf.Len()).Uint64("index", a.n.AppliedIndex()).Msg("admin: snapshot saved")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(buf.Bytes())
}

// restoreSnapshot restores a backup whose MAC this node's HSM verifies.
// ?allow-unauthenticated=1 also takes a file without a MAC (a backup of an
// older version, once); a failed MAC is never accepted.
func (a *Server) restoreSnapshot(r *http.Request) (any, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, cluster.MaxBackupBytes))
	if err != nil {
		return nil, badRequest("reading the snapshot: %v", err)
	}
	b, err := a.n.OpenBackup(data)
	switch {
	case errors.Is(err, cluster.ErrUnauthenticatedBackup) && r.URL.Query().Get("allow-unauthenticated") == "1":
		a.log.Warn().Msg("admin: restoring a backup without a MAC (--allow-unauthenticated): nothing proves it unmodified; take a new backup once it is restored")
	case errors.Is(err, cluster.ErrUnauthenticatedBackup), errors.Is(err, cluster.ErrBackupMAC), b == nil:
		return nil, badRequest("%v", err)
	case err != nil:
		return nil, &httpError{http.StatusServiceUnavailable, err.Error()}
	}
	actor := actorOf(r)
	index, err := a.n.RestoreSnapshotBy(r.Context(), &actor, b.Snapshot)
	if err != nil {
		return nil, err
	}
	return admin.Change{Index: index}, nil
}

// inspectSnapshot describes a backup file. It needs no leader (a backup is
// inspected when things have gone wrong), only this node's HSM for the MAC.
func (a *Server) inspectSnapshot(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, cluster.MaxBackupBytes))
	if err == nil {
		var info cluster.BackupInfo
		if info, err = a.n.InspectBackup(data); err == nil {
			writeJSON(w, http.StatusOK, admin.BackupInfo(info))
			return
		}
	}
	writeJSON(w, http.StatusBadRequest, admin.APIError{Error: err.Error()})
}

func (a *Server) join(r *http.Request) (any, error) {
	var req admin.MembershipRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if err := a.n.Join(req.ID, req.Address); err != nil {
		return nil, err
	}
	return struct{}{}, a.record(r, "JoinNode", req.ID+" at "+req.Address)
}

func (a *Server) remove(r *http.Request) (any, error) {
	var req admin.MembershipRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if err := a.n.Remove(req.ID); err != nil {
		return nil, err
	}
	return struct{}{}, a.record(r, "RemoveNode", req.ID)
}

// openAPI serves the admin API's OpenAPI document.
func openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(admin.DocumentJSON())
}

// nodeStatus is a node's status as the admin API answers it: the JSON the
// node reported (TestNodeStatusKeepsEveryField keeps the types in step).
func nodeStatus(st cluster.NodeStatus) admin.NodeStatus {
	var out admin.NodeStatus
	b, err := json.Marshal(st)
	if err == nil {
		err = json.Unmarshal(b, &out)
	}
	if err != nil {
		panic(err) // strings, numbers and a time always round-trip
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
