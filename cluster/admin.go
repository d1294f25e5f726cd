package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/fsm"
)

// AdminConfig is the operator API's listener. It serves HTTPS with the
// node's cluster certificate and admits a request that carries the bearer
// token or a client certificate from the cluster CA.
type AdminConfig struct {
	Listen string // default 127.0.0.1:7100 is the caller's choice
	Token  string
	// AckTimeout bounds how long a kill-switch change waits for every
	// node's confirmation; 0 means 5s.
	AckTimeout time.Duration
}

// ServeAdmin starts the admin API; it stops with Close.
func (n *Node) ServeAdmin(cfg AdminConfig) (net.Addr, error) {
	if len(cfg.Token) < 16 {
		return nil, errors.New("the admin token must be at least 16 characters")
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	ct, err := n.cfg.TLS.load()
	if err != nil {
		return nil, err
	}
	tlsCfg := ct.server.Clone()
	tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
	tlsCfg.MinVersion = tls.VersionTLS12
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	a := &admin{n: n, cfg: cfg}
	// Bounded so that idle or trickling connections cannot pile up; the
	// write bound leaves room for a pprof profile (?seconds= under 110)
	// and a snapshot download.
	srv := &http.Server{Handler: a.routes(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: time.Minute, WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute}
	go srv.ServeTLS(ln, "", "")
	n.adminServer = srv
	return ln.Addr(), nil
}

type admin struct {
	n   *Node
	cfg AdminConfig
}

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

func (a *admin) handle(mux *http.ServeMux, pattern string, h handlerFunc) {
	mux.Handle(pattern, a.authenticated(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var out any
		err := a.n.syncWithLeader(r.Context())
		if err == nil || strings.HasPrefix(pattern, "GET /v1/cluster/") {
			out, err = h(r)
		}
		ev := a.n.log.Info()
		if err != nil {
			ev = a.n.log.Warn().Err(err)
		}
		ev.Str("method", r.Method).Str("path", r.URL.Path).Dur("took", time.Since(start)).Msg("admin request")
		if err != nil {
			writeJSON(w, errorStatus(err), APIError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, out)
	})))
}

func errorStatus(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, fsm.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, fsm.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, fsm.ErrInvalid):
		return http.StatusBadRequest
	}
	var rule *RuleError
	if errors.As(err, &rule) {
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// authenticated lets through only requests that authorized accepts.
func (a *admin) authenticated(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			writeJSON(w, http.StatusUnauthorized, APIError{Error: "admin API: missing or wrong bearer token"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (a *admin) authorized(r *http.Request) bool {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(a.cfg.Token)) == 1
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return badRequest("request body: %v", err)
	}
	return nil
}

func (a *admin) routes() http.Handler {
	mux := http.NewServeMux()
	a.handle(mux, "GET /v1/keystores", a.listKeyStores)
	a.handle(mux, "POST /v1/keystores", a.createKeyStore)
	a.handle(mux, "GET /v1/keystores/{ks}", a.showKeyStore)
	a.handle(mux, "POST /v1/keystores/{ks}/enable", a.setKeyStoreEnabled(true))
	a.handle(mux, "POST /v1/keystores/{ks}/disable", a.setKeyStoreEnabled(false))
	a.handle(mux, "GET /v1/keystores/{ks}/credentials", a.listCredentials)
	a.handle(mux, "POST /v1/keystores/{ks}/credentials", a.addCredential)
	a.handle(mux, "DELETE /v1/keystores/{ks}/credentials/{akid}", a.removeCredential)
	a.handle(mux, "GET /v1/keystores/{ks}/keys", a.listKeys)
	a.handle(mux, "POST /v1/keystores/{ks}/keys", a.createKey)
	a.handle(mux, "GET /v1/keystores/{ks}/keys/{key}", a.showKey)
	a.handle(mux, "POST /v1/keystores/{ks}/keys/{key}/enable", a.setKeyEnabled(true))
	a.handle(mux, "POST /v1/keystores/{ks}/keys/{key}/disable", a.setKeyEnabled(false))
	a.handle(mux, "POST /v1/keystores/{ks}/keys/{key}/rotate", a.rotateKey)
	a.handle(mux, "POST /v1/keystores/{ks}/keys/{key}/schedule-deletion", a.scheduleDeletion)
	a.handle(mux, "POST /v1/keystores/{ks}/keys/{key}/cancel-deletion", a.cancelDeletion)
	a.handle(mux, "GET /v1/keystores/{ks}/grants", a.listGrants)
	a.handle(mux, "POST /v1/keystores/{ks}/grants", a.addGrant)
	a.handle(mux, "DELETE /v1/keystores/{ks}/grants/{id}", a.removeGrant)
	a.handle(mux, "GET /v1/cluster/status", a.clusterStatus)
	mux.Handle("GET /v1/snapshot", a.authenticated(http.HandlerFunc(a.saveSnapshot)))
	a.handle(mux, "POST /v1/snapshot", a.restoreSnapshot)
	mux.Handle("POST /v1/snapshot/inspect", a.authenticated(http.HandlerFunc(a.inspectSnapshot)))
	a.handle(mux, "POST /v1/cluster/join", a.join)
	a.handle(mux, "POST /v1/cluster/remove", a.remove)
	a.debugRoutes(mux)
	return mux
}

func (a *admin) store(r *http.Request) (*fsm.StoredKeyStore, error) {
	ks := a.n.fsm.State().KeyStore(r.PathValue("ks"))
	if ks == nil {
		return nil, &httpError{http.StatusNotFound, "no key store " + r.PathValue("ks")}
	}
	return ks, nil
}

func keyStoreInfo(st *fsm.State, ks *fsm.StoredKeyStore, now time.Time) KeyStoreInfo {
	info := KeyStoreInfo{Name: ks.Name, URIPath: ks.URIPath, Region: ks.Region, Enabled: ks.Enabled,
		QuotaRPS: int(ks.QuotaRPS), GrantsMode: string(ks.GrantsMode), KeyMode: string(ks.KeyMode),
		Credentials: credentialInfos(ks, now), Keys: len(st.Keys(ks.Name))}
	return info
}

func credentialInfos(ks *fsm.StoredKeyStore, now time.Time) []CredentialInfo {
	out := make([]CredentialInfo, 0, len(ks.Credentials))
	for _, c := range ks.Credentials {
		ci := CredentialInfo{AccessKeyID: c.AccessKeyID, CreatedAt: c.CreatedAt}
		if !c.ExpiresAt.IsZero() {
			t := c.ExpiresAt
			ci.ExpiresAt = &t
			ci.Expired = !now.Before(t)
		}
		out = append(out, ci)
	}
	return out
}

func (a *admin) listKeyStores(*http.Request) (any, error) {
	st := a.n.fsm.State()
	out := []KeyStoreInfo{}
	for _, ks := range st.KeyStores() {
		out = append(out, keyStoreInfo(st, ks, time.Now()))
	}
	return out, nil
}

func (a *admin) showKeyStore(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	return keyStoreInfo(a.n.fsm.State(), ks, time.Now()), nil
}

func (a *admin) createKeyStore(r *http.Request) (any, error) {
	var req CreateKeyStoreRequest
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
	sealed, err := a.n.sealCredential(req.Name, cred.AccessKeyID, cred.Secret, time.Time{})
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
	if _, err := a.n.Apply(r.Context(), fsm.CreateKeyStore{At: time.Now().UTC(), KeyStore: ks}); err != nil {
		return nil, err
	}
	st := a.n.fsm.State()
	return CreateKeyStoreResponse{
		KeyStore:   keyStoreInfo(st, st.KeyStore(req.Name), time.Now()),
		Credential: newCredential(&ks, cred.AccessKeyID, string(cred.Secret), nil),
	}, nil
}

func newCredential(ks *fsm.StoredKeyStore, akid, secret string, expires *time.Time) NewCredential {
	nc := NewCredential{KeyStore: ks.Name, AccessKeyID: akid, SecretAccessKey: secret, ExpiresAt: expires}
	nc.KMSConsole.XksProxyURIPath = ks.URIPath
	nc.KMSConsole.Credential.AccessKeyID = akid
	nc.KMSConsole.Credential.RawSecretAccessKey = secret
	return nc
}

// everywhere commits cmd and waits until every node serves it: the kill
// switch returns only once each node has confirmed, or says who did not.
func (a *admin) everywhere(ctx context.Context, cmd fsm.Command) (ChangeResult, error) {
	start := time.Now()
	index, err := a.n.Apply(ctx, cmd)
	if err != nil {
		return ChangeResult{}, err
	}
	actx, cancel := context.WithTimeout(ctx, a.cfg.AckTimeout)
	defer cancel()
	res := ChangeResult{Index: index, Acks: a.n.WaitApplied(actx, index)}
	for _, ack := range res.Acks {
		if ack.Confirmed {
			res.Confirmed++
		}
	}
	res.Nodes = len(res.Acks)
	res.Elapsed = time.Since(start).Round(time.Microsecond).String()
	return res, nil
}

func (a *admin) setKeyStoreEnabled(enabled bool) handlerFunc {
	return func(r *http.Request) (any, error) {
		if _, err := a.store(r); err != nil {
			return nil, err
		}
		return a.everywhere(r.Context(), fsm.UpdateKeyStore{Name: r.PathValue("ks"), Enabled: &enabled})
	}
}

func (a *admin) listCredentials(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	return credentialInfos(ks, time.Now()), nil
}

func (a *admin) addCredential(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	var req AddCredentialRequest
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
	sealed, err := a.n.sealCredential(ks.Name, cred.AccessKeyID, cred.Secret, expires)
	if err != nil {
		return nil, err
	}
	if _, err := a.n.Apply(r.Context(), fsm.AddCredential{At: time.Now().UTC(), KeyStore: ks.Name, Credential: sealed}); err != nil {
		return nil, err
	}
	return newCredential(ks, cred.AccessKeyID, string(cred.Secret), req.ExpiresAt), nil
}

func (a *admin) removeCredential(r *http.Request) (any, error) {
	return a.everywhere(r.Context(), fsm.RemoveCredential{At: time.Now().UTC(), KeyStore: r.PathValue("ks"), AccessKeyID: r.PathValue("akid")})
}

func keyInfo(k *fsm.Key) KeyInfo {
	info := KeyInfo{KeyStore: k.KeyStore, ID: k.ID, Usage: k.Usage.Names(), Enabled: k.Enabled,
		CurrentVersion: k.CurrentVersion, CreatedAt: k.CreatedAt, Deleted: k.Deleted}
	if !k.DeletionDate.IsZero() {
		d := k.DeletionDate
		info.DeletionDate = &d
	}
	for _, v := range k.Versions {
		info.Versions = append(info.Versions, VersionInfo{Number: v.Number, HSMLabel: v.HSMLabel,
			Wrapped: len(v.WrappedMaterial) > 0, CreatedAt: v.CreatedAt})
	}
	return info
}

func (a *admin) listKeys(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	out := []KeyInfo{}
	for _, k := range a.n.fsm.State().Keys(ks.Name) {
		out = append(out, keyInfo(k))
	}
	return out, nil
}

func (a *admin) showKey(r *http.Request) (any, error) {
	k := a.n.fsm.State().Key(r.PathValue("ks"), r.PathValue("key"))
	if k == nil {
		return nil, &httpError{http.StatusNotFound, "no key " + r.PathValue("ks") + "/" + r.PathValue("key")}
	}
	return keyInfo(k), nil
}

func (a *admin) createKey(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	var req CreateKeyRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if len(req.Usage) == 0 {
		req.Usage = []string{"ENCRYPT", "DECRYPT"}
	}
	usage, err := fsm.ParseUsage(req.Usage)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if a.n.fsm.State().Key(ks.Name, req.ID) != nil {
		return nil, &httpError{http.StatusConflict, "key " + ks.Name + "/" + req.ID + " already exists"}
	}
	v, err := a.n.firstVersion(ks.KeyMode, ks.Name, req.ID, req.HSMLabel)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if ks.KeyMode == fsm.KeyModeShared {
		// Adopting a label is safe only if every live node's HSM holds it:
		// otherwise some node would fail every request for the key.
		if missing := a.n.nodesLacking(r.Context(), v.HSMLabel); len(missing) > 0 {
			return nil, &httpError{http.StatusConflict, fmt.Sprintf("HSM label %q is not visible on %s; import the key there first", v.HSMLabel, strings.Join(missing, ", "))}
		}
	}
	key := fsm.Key{KeyStore: ks.Name, ID: req.ID, Usage: usage, Enabled: true, CurrentVersion: 1, Versions: []fsm.KeyVersion{v}}
	index, err := a.n.Apply(r.Context(), fsm.CreateKey{At: time.Now().UTC(), Key: key})
	if err != nil {
		return nil, err
	}
	// The key is answered once every reachable node serves it (its
	// material unwrapped into each HSM), so that a script may use it at
	// once through any node.
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.AckTimeout)
	defer cancel()
	a.n.WaitApplied(ctx, index)
	if k := a.n.fsm.State().Key(ks.Name, req.ID); k != nil {
		return keyInfo(k), nil
	}
	return keyInfo(&key), nil
}

// rotateKey adds a version and makes it current in two phases, so that no
// node is asked to encrypt with material it lacks: the new version first
// reaches every node's HSM (each reachable node confirms its view and
// reports nothing missing), and only then becomes current. A node that is
// down catches up before it turns ready again. Old versions stay forever.
func (a *admin) rotateKey(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	k := a.n.fsm.State().Key(ks.Name, r.PathValue("key"))
	if k == nil {
		return nil, &httpError{http.StatusNotFound, "no key " + ks.Name + "/" + r.PathValue("key")}
	}
	if ks.KeyMode != fsm.KeyModeReplicated {
		return nil, badRequest("key store %s is in %s mode: rotate by adopting a new HSM label (not supported yet)", ks.Name, ks.KeyMode)
	}
	number := k.Versions[len(k.Versions)-1].Number + 1
	wrapped, mechanism, err := a.n.hsm.GenerateWrappedKey()
	if err != nil {
		return nil, fmt.Errorf("generating the new version's material: %w", err)
	}
	v := fsm.KeyVersion{Number: number, HSMLabel: versionLabel(ks.Name, k.ID, number), WrappedMaterial: wrapped, WrapMechanism: mechanism}
	added, err := a.everywhere(r.Context(), fsm.AddKeyVersion{At: time.Now().UTC(), KeyStore: ks.Name, KeyID: k.ID, Version: v})
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
	return a.everywhere(r.Context(), fsm.SetCurrentVersion{KeyStore: ks.Name, KeyID: k.ID, Version: number})
}

func (a *admin) scheduleDeletion(r *http.Request) (any, error) {
	var req ScheduleDeletionRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ks, id := r.PathValue("ks"), r.PathValue("key")
	index, err := a.n.Apply(r.Context(), fsm.ScheduleDeletion{At: a.n.cfg.Now().UTC(), KeyStore: ks, KeyID: id, Days: req.Days})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.AckTimeout)
	defer cancel()
	a.n.waitViewIndex(ctx, index)
	return keyInfo(a.n.fsm.State().Key(ks, id)), nil
}

func (a *admin) cancelDeletion(r *http.Request) (any, error) {
	ks, id := r.PathValue("ks"), r.PathValue("key")
	index, err := a.n.Apply(r.Context(), fsm.CancelDeletion{KeyStore: ks, KeyID: id})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.AckTimeout)
	defer cancel()
	a.n.waitViewIndex(ctx, index)
	return keyInfo(a.n.fsm.State().Key(ks, id)), nil
}

func (a *admin) setKeyEnabled(enabled bool) handlerFunc {
	return func(r *http.Request) (any, error) {
		return a.everywhere(r.Context(), fsm.SetKeyEnabled{KeyStore: r.PathValue("ks"), KeyID: r.PathValue("key"), Enabled: enabled})
	}
}

func grantInfo(g *fsm.Grant) GrantInfo {
	ops := g.Operations
	if len(ops) == 0 {
		ops = []string{"GetKeyMetadata", "Encrypt", "Decrypt"}
	}
	return GrantInfo{ID: g.ID, KeyStore: g.KeyStore, KeyID: g.KeyID, Principals: g.Principals, Accounts: g.Accounts,
		Regions: g.Regions, ViaServices: g.ViaServices, SourceVPCs: g.SourceVPCs, SourceVPCEs: g.SourceVPCEs, Operations: ops}
}

func (a *admin) listGrants(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	out := []GrantInfo{}
	for _, g := range a.n.fsm.State().Grants() {
		if g.KeyStore == ks.Name {
			out = append(out, grantInfo(g))
		}
	}
	return out, nil
}

func (a *admin) addGrant(r *http.Request) (any, error) {
	ks, err := a.store(r)
	if err != nil {
		return nil, err
	}
	var req GrantInfo
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	id := make([]byte, 6)
	rand.Read(id)
	g := fsm.Grant{ID: "g-" + hex.EncodeToString(id), KeyStore: ks.Name, KeyID: req.KeyID, Principals: req.Principals,
		Accounts: req.Accounts, Regions: req.Regions, ViaServices: req.ViaServices, SourceVPCs: req.SourceVPCs,
		SourceVPCEs: req.SourceVPCEs, Operations: req.Operations}
	if _, err := a.everywhere(r.Context(), fsm.AddGrant{At: time.Now().UTC(), Grant: g}); err != nil {
		return nil, err
	}
	return grantInfo(&g), nil
}

func (a *admin) removeGrant(r *http.Request) (any, error) {
	g := a.n.fsm.State().Grant(r.PathValue("id"))
	if g == nil || g.KeyStore != r.PathValue("ks") {
		return nil, &httpError{http.StatusNotFound, "no grant " + r.PathValue("id") + " in key store " + r.PathValue("ks")}
	}
	return a.everywhere(r.Context(), fsm.RemoveGrant{ID: g.ID})
}

func (a *admin) clusterStatus(r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	nodes, _ := a.n.Statuses(ctx)
	st := ClusterStatus{Nodes: nodes, CommandSet: a.n.fsm.State().CommandSet()}
	for _, m := range a.n.Members() {
		st.Fleet = append(st.Fleet, FleetStatus{ID: m.ID, State: m.State, APIAddr: m.APIAddr, HSMStatus: m.HSMStatus,
			Ready: m.Ready, AppliedIndex: m.AppliedIndex, KeysReady: m.KeysReady})
	}
	if addr, id := a.n.raft.LeaderWithID(); addr != "" {
		st.Leader = &LeaderInfo{ID: string(id), ClusterAddr: string(addr)}
		for _, n := range nodes {
			if n.ID == string(id) {
				st.Leader.APIAddress = n.APIAddr
			}
		}
	}
	return st, nil
}

// saveSnapshot writes a backup file (the state and its MAC), after catching
// up with the leader so that the backup holds every committed change.
func (a *admin) saveSnapshot(w http.ResponseWriter, r *http.Request) {
	// ?stale=1 takes this node's state as it is: the way out when the
	// cluster has lost its quorum and no leader can confirm anything.
	if r.URL.Query().Get("stale") != "1" {
		if err := a.n.syncWithLeader(r.Context()); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, APIError{Error: err.Error() + " (save with --stale to take this node's state as it is)"})
			return
		}
	}
	var buf bytes.Buffer
	if err := a.n.SaveBackup(&buf); err != nil {
		writeJSON(w, http.StatusInternalServerError, APIError{Error: err.Error()})
		return
	}
	a.n.log.Info().Int("bytes", buf.Len()).Uint64("index", a.n.fsm.AppliedIndex()).Msg("admin: snapshot saved")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(buf.Bytes())
}

// restoreSnapshot restores a backup whose MAC this node's HSM verifies.
// ?allow-unauthenticated=1 also takes a file without a MAC (a backup of an
// older version, once); a failed MAC is never accepted.
func (a *admin) restoreSnapshot(r *http.Request) (any, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxSnapshotBytes))
	if err != nil {
		return nil, badRequest("reading the snapshot: %v", err)
	}
	b, err := a.n.OpenBackup(data)
	switch {
	case errors.Is(err, ErrUnauthenticatedBackup) && r.URL.Query().Get("allow-unauthenticated") == "1":
		a.n.log.Warn().Msg("admin: restoring a backup without a MAC (--allow-unauthenticated): nothing proves it unmodified; take a new backup once it is restored")
	case errors.Is(err, ErrUnauthenticatedBackup), errors.Is(err, ErrBackupMAC), b == nil:
		return nil, badRequest("%v", err)
	case err != nil:
		return nil, &httpError{http.StatusServiceUnavailable, err.Error()}
	}
	index, err := a.n.RestoreSnapshot(r.Context(), b.Snapshot)
	if err != nil {
		return nil, err
	}
	return ChangeResult{Index: index}, nil
}

// inspectSnapshot describes a backup file. It needs no leader (a backup is
// inspected when things have gone wrong), only this node's HSM for the MAC.
func (a *admin) inspectSnapshot(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxSnapshotBytes))
	if err == nil {
		var info BackupInfo
		if info, err = a.n.InspectBackup(data); err == nil {
			writeJSON(w, http.StatusOK, info)
			return
		}
	}
	writeJSON(w, http.StatusBadRequest, APIError{Error: err.Error()})
}

func (a *admin) join(r *http.Request) (any, error) {
	var req MembershipRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return struct{}{}, a.n.Join(req.ID, req.Address)
}

func (a *admin) remove(r *http.Request) (any, error) {
	var req MembershipRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return struct{}{}, a.n.Remove(req.ID)
}
