// Package noderpc is the protocol nodes speak to one another over the
// cluster port's mutual TLS, beside Raft: its routes, written once, the
// messages they carry, and the call that makes one. Package cluster serves
// and calls it; this package knows nothing of a node.
//
// Nodes of the previous build call these routes during a rolling upgrade,
// so their paths, methods and JSON never change; a route or a field may
// only be added, and a caller must cope with an older node that lacks it
// (404 for a route).
package noderpc

// Route is one node-to-node call.
type Route struct {
	Method string
	Path   string
}

// Pattern is the route as a net/http ServeMux pattern.
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// The routes. Every path of the protocol is written here and nowhere else.
var (
	// Apply commits an encoded command (the body, as it is) on the leader;
	// the answer is an ApplyResponse.
	Apply = Route{"POST", "/v1/apply"}
	// Join admits a node (JoinRequest) as a voter, on the leader.
	Join = Route{"POST", "/v1/join"}
	// Remove removes a node (JoinRequest, its ID) from the voters, on the
	// leader.
	Remove = Route{"POST", "/v1/remove"}
	// Removed tells a node the leader removed it: it stops serving.
	Removed = Route{"POST", "/v1/removed"}
	// Restore installs a snapshot (the body, as it is) on the leader.
	Restore = Route{"POST", "/v1/restore"}
	// HasKey asks whether a node's HSM holds a label (HasKeyQuery).
	HasKey = Route{"GET", "/v1/haskey"}
	// LeaderIndex asks the leader for its FSM's applied index, with the
	// asking node's build attached (BuildQuery); the answer is a
	// LeaderIndexResponse. Builds before it answer 404.
	LeaderIndex = Route{"GET", "/v1/leader-index"}
	// Status asks a node for its NodeStatus.
	Status = Route{"GET", "/v1/status"}
	// AwaitStatus answers a node's NodeStatus once one of its indexes
	// reaches a target, or once the wait is over (AwaitQuery). Builds
	// before it answer 404; callers then poll Status.
	AwaitStatus = Route{"GET", "/v1/await-status"}
	// Configuration lists the Raft configuration as a node holds it
	// ([]ConfigServer), so that a node that missed a join can ask the
	// members it knows whether they admitted a peer. Builds before it
	// answer 404, which counts as "not admitted".
	Configuration = Route{"GET", "/v1/configuration"}
)

// Routes is the whole protocol.
var Routes = []Route{Apply, Join, Remove, Removed, Restore, HasKey, LeaderIndex, Status, AwaitStatus, Configuration}
