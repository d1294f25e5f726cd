// Package admin is the operator API: its route table, request and response
// types, the typed client the CLI uses, and the OpenAPI document. The
// server is admin/server; it binds a handler to every route here.
//
// This package imports none of ours, so that anything may call the API
// (cluster's own tests among them) without pulling in the server.
package admin

import (
	"net/url"
	"strings"
)

// Sync says what a node does before answering a route.
type Sync int

const (
	// NoSync answers from this node at once: backups are inspected and
	// profiles taken when things are wrong.
	NoSync Sync = iota
	// SyncFirst catches up with the leader first and refuses without one,
	// so that an operator sees one state through any node: a key store
	// created through node 1 exists for the next command sent to node 2.
	SyncFirst
	// SyncTry catches up when it can and answers anyway: the cluster's
	// status must be readable while it has no leader.
	SyncTry
)

// Role is what an operator may do; the roles nest, each allowing what the
// one before it does. They are fsm's roles, named again here because this
// package imports none of ours (the server's tests check they agree).
type Role string

const (
	RoleReader     Role = "reader"     // listings, statuses, the audit trail
	RoleKillSwitch Role = "killswitch" // also: disable a key or a key store
	RoleOperator   Role = "operator"   // also: key stores, credentials, keys, grants
	RoleAdmin      Role = "admin"      // also: operators, membership, snapshots, profiles
)

// Roles lists the roles from the least to the most privileged.
var Roles = []Role{RoleReader, RoleKillSwitch, RoleOperator, RoleAdmin}

// Route is one operation of the admin API. Its Pattern is a net/http
// ServeMux path pattern; the client fills its {wildcards} in order.
type Route struct {
	Name    string // the OpenAPI operationId
	Method  string
	Pattern string
	Sync    Sync
	// Role is the least role that may call the route: the server checks it,
	// the OpenAPI document shows it.
	Role    Role
	Summary string
	// Stale: the route takes ?stale=true (or 1), and then answers from
	// this node's state as it is, without asking the leader (Consul's and
	// rqlite's stale read level): a read that costs no round trip to
	// another site, and that works without a leader. The answer's
	// AppliedIndexHeader and LeaderContactAgeHeader say how old it may be.
	Stale bool
	// Request and Response are the JSON bodies (nil: none); Octets marks a
	// route whose body (request for POST, answer for GET) is a file as it is.
	Request, Response any
	Octets            bool
	Query             []string // optional query parameters, besides stale
}

// StaleParam is the query parameter of a stale read.
const StaleParam = "stale"

// The answer headers of a route that reads or changes the state
// (StatesFreshness): how current the node that answered was.
const (
	// AppliedIndexHeader is the index of the last command the node had
	// applied before it read the state for the answer: the answer holds
	// every change up to it.
	AppliedIndexHeader = "X-Xksproxy-Applied-Index"
	// LeaderContactAgeHeader is how long the node had gone without hearing
	// from the leader, in whole milliseconds: 0 on the leader; since its
	// start when it has heard from none.
	LeaderContactAgeHeader = "X-Xksproxy-Leader-Contact-Age-Ms"
)

// StatesFreshness reports whether the route's answers carry
// AppliedIndexHeader and LeaderContactAgeHeader: every route that reads or
// changes the replicated state.
func (r *Route) StatesFreshness() bool { return r.Sync != NoSync || r.Stale }

// Path is the route's path with args in place of its wildcards, escaped.
func (r *Route) Path(args ...string) string {
	parts := strings.Split(r.Pattern, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, "{") && len(args) > 0 {
			parts[i], args = url.PathEscape(args[0]), args[1:]
		}
	}
	return strings.Join(parts, "/")
}

// The routes. Every path of the admin API is written here and nowhere else.
var (
	ListKeyStores   = &Route{Name: "listKeyStores", Method: "GET", Pattern: "/v1/keystores", Sync: SyncFirst, Role: RoleReader, Stale: true, Summary: "List key stores", Response: []KeyStoreInfo{}}
	CreateKeyStore  = &Route{Name: "createKeyStore", Method: "POST", Pattern: "/v1/keystores", Sync: SyncFirst, Role: RoleOperator, Summary: "Create a key store and its first SigV4 credential", Request: CreateKeyStoreRequest{}, Response: CreateKeyStoreResponse{}}
	ShowKeyStore    = &Route{Name: "showKeyStore", Method: "GET", Pattern: "/v1/keystores/{ks}", Sync: SyncFirst, Role: RoleReader, Stale: true, Summary: "Show a key store", Response: KeyStoreInfo{}}
	EnableKeyStore  = &Route{Name: "enableKeyStore", Method: "POST", Pattern: "/v1/keystores/{ks}/enable", Sync: SyncFirst, Role: RoleOperator, Summary: "Enable a key store on every node", Response: Change{}}
	DisableKeyStore = &Route{Name: "disableKeyStore", Method: "POST", Pattern: "/v1/keystores/{ks}/disable", Sync: SyncFirst, Role: RoleKillSwitch, Summary: "Disable a key store on every node (kill switch)", Response: Change{}}

	ListCredentials  = &Route{Name: "listCredentials", Method: "GET", Pattern: "/v1/keystores/{ks}/credentials", Sync: SyncFirst, Role: RoleReader, Stale: true, Summary: "List a key store's credentials (never their secrets)", Response: []CredentialInfo{}}
	AddCredential    = &Route{Name: "addCredential", Method: "POST", Pattern: "/v1/keystores/{ks}/credentials", Sync: SyncFirst, Role: RoleOperator, Summary: "Add a SigV4 credential; its secret is answered once", Request: AddCredentialRequest{}, Response: NewCredential{}}
	RemoveCredential = &Route{Name: "removeCredential", Method: "DELETE", Pattern: "/v1/keystores/{ks}/credentials/{akid}", Sync: SyncFirst, Role: RoleOperator, Summary: "Revoke a credential on every node", Response: Change{}}

	ListKeys         = &Route{Name: "listKeys", Method: "GET", Pattern: "/v1/keystores/{ks}/keys", Sync: SyncFirst, Role: RoleReader, Stale: true, Summary: "List a key store's keys", Response: []KeyInfo{}}
	CreateKey        = &Route{Name: "createKey", Method: "POST", Pattern: "/v1/keystores/{ks}/keys", Sync: SyncFirst, Role: RoleOperator, Summary: "Create a key; answered once every reachable node serves it", Request: CreateKeyRequest{}, Response: KeyInfo{}}
	ShowKey          = &Route{Name: "showKey", Method: "GET", Pattern: "/v1/keystores/{ks}/keys/{key}", Sync: SyncFirst, Role: RoleReader, Stale: true, Summary: "Show a key and its versions", Response: KeyInfo{}}
	EnableKey        = &Route{Name: "enableKey", Method: "POST", Pattern: "/v1/keystores/{ks}/keys/{key}/enable", Sync: SyncFirst, Role: RoleOperator, Summary: "Enable a key on every node", Response: Change{}}
	DisableKey       = &Route{Name: "disableKey", Method: "POST", Pattern: "/v1/keystores/{ks}/keys/{key}/disable", Sync: SyncFirst, Role: RoleKillSwitch, Summary: "Disable a key on every node (kill switch)", Response: Change{}}
	RotateKey        = &Route{Name: "rotateKey", Method: "POST", Pattern: "/v1/keystores/{ks}/keys/{key}/rotate", Sync: SyncFirst, Role: RoleOperator, Summary: "Add a version (generated, or in a shared key store an adopted HSM label) and make it current once every node holds it", Request: RotateKeyRequest{}, Response: Change{}}
	ScheduleDeletion = &Route{Name: "scheduleDeletion", Method: "POST", Pattern: "/v1/keystores/{ks}/keys/{key}/schedule-deletion", Sync: SyncFirst, Role: RoleOperator, Summary: "Delete a disabled key after 7-30 days", Request: ScheduleDeletionRequest{}, Response: KeyInfo{}}
	CancelDeletion   = &Route{Name: "cancelDeletion", Method: "POST", Pattern: "/v1/keystores/{ks}/keys/{key}/cancel-deletion", Sync: SyncFirst, Role: RoleOperator, Summary: "Cancel a scheduled deletion (the key stays disabled)", Response: KeyInfo{}}

	ListGrants  = &Route{Name: "listGrants", Method: "GET", Pattern: "/v1/keystores/{ks}/grants", Sync: SyncFirst, Role: RoleReader, Stale: true, Summary: "List a key store's grants", Response: []GrantInfo{}}
	AddGrant    = &Route{Name: "addGrant", Method: "POST", Pattern: "/v1/keystores/{ks}/grants", Sync: SyncFirst, Role: RoleOperator, Summary: "Allow principals to use a key", Request: GrantInfo{}, Response: GrantInfo{}}
	RemoveGrant = &Route{Name: "removeGrant", Method: "DELETE", Pattern: "/v1/keystores/{ks}/grants/{id}", Sync: SyncFirst, Role: RoleOperator, Summary: "Remove a grant on every node", Response: Change{}}

	CheckHSMLabels = &Route{Name: "checkHSMLabels", Method: "POST", Pattern: "/v1/hsm/labels", Sync: SyncFirst, Role: RoleOperator, Summary: "Which nodes' HSMs lack each of some key labels (changes nothing)", Request: HSMLabelsRequest{}, Response: []HSMLabelCheck{}}

	GetClusterStatus = &Route{Name: "clusterStatus", Method: "GET", Pattern: "/v1/cluster/status", Sync: SyncTry, Role: RoleReader, Stale: true, Summary: "The leader, every voter as it reports itself, and the gossip fleet", Response: ClusterStatus{}}
	JoinNode         = &Route{Name: "joinNode", Method: "POST", Pattern: "/v1/cluster/join", Sync: SyncFirst, Role: RoleAdmin, Summary: "Admit a node as a voter (idempotent)", Request: MembershipRequest{}, Response: struct{}{}}
	RemoveNode       = &Route{Name: "removeNode", Method: "POST", Pattern: "/v1/cluster/remove", Sync: SyncFirst, Role: RoleAdmin, Summary: "Remove a node from the voters", Request: MembershipRequest{}, Response: struct{}{}}

	// SaveSnapshot catches up with the leader itself, unless ?stale=true.
	SaveSnapshot    = &Route{Name: "saveSnapshot", Method: "GET", Pattern: "/v1/snapshot", Sync: NoSync, Role: RoleAdmin, Stale: true, Summary: "Download a backup (the state and its MAC)", Octets: true}
	RestoreSnapshot = &Route{Name: "restoreSnapshot", Method: "POST", Pattern: "/v1/snapshot", Sync: SyncFirst, Role: RoleAdmin, Summary: "Restore a backup whose MAC this node's HSM verifies", Octets: true, Response: Change{}, Query: []string{"allow-unauthenticated"}}
	InspectSnapshot = &Route{Name: "inspectSnapshot", Method: "POST", Pattern: "/v1/snapshot/inspect", Sync: NoSync, Role: RoleAdmin, Summary: "Describe a backup and check its MAC, without restoring it", Octets: true, Response: BackupInfo{}}

	ListOperators  = &Route{Name: "listOperators", Method: "GET", Pattern: "/v1/operators", Sync: SyncFirst, Stale: true, Role: RoleReader, Summary: "List the named operators and their roles (never their tokens)", Response: []OperatorInfo{}}
	CreateOperator = &Route{Name: "createOperator", Method: "POST", Pattern: "/v1/operators", Sync: SyncFirst, Role: RoleAdmin, Summary: "Create a named operator; its token is answered once", Request: CreateOperatorRequest{}, Response: NewOperator{}}
	RevokeOperator = &Route{Name: "revokeOperator", Method: "DELETE", Pattern: "/v1/operators/{name}", Sync: SyncFirst, Role: RoleAdmin, Summary: "Revoke a named operator's token on every node", Response: Change{}}

	ListAudit   = &Route{Name: "listAudit", Method: "GET", Pattern: "/v1/audit", Sync: SyncFirst, Stale: true, Role: RoleReader, Summary: "The audit trail of admin changes, oldest first", Response: AuditTrail{}, Query: []string{"since"}}
	VerifyAudit = &Route{Name: "verifyAudit", Method: "GET", Pattern: "/v1/audit/verify", Sync: SyncFirst, Stale: true, Role: RoleReader, Summary: "Check the audit trail's hash chain; names the first record edited, removed or reordered", Response: AuditVerification{}}

	Profile = &Route{Name: "profile", Method: "GET", Pattern: "/v1/debug/pprof/{profile}", Sync: NoSync, Role: RoleAdmin, Summary: "A Go runtime profile: profile, trace, allocs, block, goroutine, heap, mutex or threadcreate", Octets: true, Query: []string{"seconds", "debug"}}
	OpenAPI = &Route{Name: "openAPI", Method: "GET", Pattern: "/v1/openapi.json", Sync: NoSync, Role: RoleReader, Summary: "This API as an OpenAPI 3 document", Octets: true}
)

// Routes is the whole admin API, in the order the OpenAPI document lists it.
var Routes = []*Route{
	ListKeyStores, CreateKeyStore, ShowKeyStore, EnableKeyStore, DisableKeyStore,
	ListCredentials, AddCredential, RemoveCredential,
	ListKeys, CreateKey, ShowKey, EnableKey, DisableKey, RotateKey, ScheduleDeletion, CancelDeletion,
	ListGrants, AddGrant, RemoveGrant,
	CheckHSMLabels,
	GetClusterStatus, JoinNode, RemoveNode,
	SaveSnapshot, RestoreSnapshot, InspectSnapshot,
	ListOperators, CreateOperator, RevokeOperator,
	ListAudit, VerifyAudit,
	Profile, OpenAPI,
}
