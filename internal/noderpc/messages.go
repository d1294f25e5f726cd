package noderpc

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// NotLeaderStatus answers a leader-only route on a node that does not lead:
// the caller finds the leader again.
const NotLeaderStatus = http.StatusMisdirectedRequest

// JoinRequest names a node for Join and Remove (and Removed, which ignores it).
type JoinRequest struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// ApplyResponse answers Apply, Join, Remove, Removed and Restore.
type ApplyResponse struct {
	Index uint64 `json:"index"`
	Error string `json:"error,omitempty"`
	// Kind names the rule a refusal broke, so that the node that forwarded
	// the change answers the operator as the leader would. Builds before
	// it leave it out.
	Kind string `json:"kind,omitempty"`
}

// HasKeyResponse answers HasKey.
type HasKeyResponse struct {
	Present bool   `json:"present"`
	Error   string `json:"error,omitempty"`
}

// LeaderIndexResponse answers LeaderIndex.
type LeaderIndexResponse struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
}

// NodeStatus is what a node says of itself: the answer of Status and
// AwaitStatus, and what `cluster status` shows.
type NodeStatus struct {
	ID           string   `json:"id"`
	ClusterAddr  string   `json:"clusterAddress"`
	APIAddr      string   `json:"apiAddress"`
	State        string   `json:"raftState"`
	AppliedIndex uint64   `json:"appliedIndex"`
	CommitIndex  uint64   `json:"commitIndex"`
	ViewIndex    uint64   `json:"viewIndex"`
	LeaderIndex  uint64   `json:"leaderIndex,omitempty"` // the leader's index as last learned; viewIndex must reach it
	Ready        bool     `json:"ready"`
	NotReady     string   `json:"notReadyReason,omitempty"`
	HSM          string   `json:"hsmStatus"`
	LastContact  string   `json:"lastLeaderContact,omitempty"`
	KeysMissing  []string `json:"keysMissing,omitempty"`
	// KeysMissingDetail is KeysMissing as structures, for programs.
	KeysMissingDetail []MissingVersion `json:"keysMissingDetail,omitempty"`
	// ReconciledIndex: this node's HSM matches the state at this index
	// (KeysMissing lists what it could not make match).
	ReconciledIndex uint64 `json:"reconciledIndex"`
	// AddressMismatch: the stored Raft configuration names this node at an
	// address it no longer advertises.
	AddressMismatch string `json:"addressMismatch,omitempty"`
	// Version and CommandSet describe the node's build; builds from before
	// they were reported leave them out.
	Version    string    `json:"version,omitempty"`
	CommandSet int       `json:"commandSet,omitempty"`
	Time       time.Time `json:"time"`
}

// MissingVersion is a key version whose material a node's HSM lacks.
type MissingVersion struct {
	KeyStore string `json:"keyStore"`
	KeyID    string `json:"keyId"`
	Version  uint32 `json:"version"`
	Reason   string `json:"reason"`
}

func (m MissingVersion) String() string {
	return fmt.Sprintf("%s/%s v%d: %s", m.KeyStore, m.KeyID, m.Version, m.Reason)
}

// ConfigServer is one server of the Raft configuration, as Configuration
// lists it.
type ConfigServer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// HasKeyQuery asks HasKey about label.
func HasKeyQuery(label string) url.Values { return url.Values{"label": {label}} }

// HasKeyLabel is the label a HasKey question names.
func HasKeyLabel(q url.Values) string { return q.Get("label") }

// Build is what a node tells the leader of its build with every
// LeaderIndex question.
type Build struct {
	Node       string
	Version    string
	CommandSet int
}

// LeaderIndexQuery is a LeaderIndex question from a node of build b. With
// confirm, the leader confirms with a quorum that it still leads before it
// answers (builds before it ignore the parameter and answer at once).
func LeaderIndexQuery(b Build, confirm bool) url.Values {
	q := url.Values{"node": {b.Node}, "version": {b.Version}, "commandSet": {strconv.Itoa(b.CommandSet)}}
	if confirm {
		q.Set("confirm", "1")
	}
	return q
}

// ConfirmsLeadership reports whether a LeaderIndex question asks the
// leader to confirm its leadership first.
func ConfirmsLeadership(q url.Values) bool { return q.Get("confirm") == "1" }

// ParseBuild reads the build a LeaderIndex question carries; ok is false
// when it carries none that can count (a build that predates command sets).
func ParseBuild(q url.Values) (b Build, ok bool) {
	set, err := strconv.Atoi(q.Get("commandSet"))
	b = Build{Node: q.Get("node"), Version: q.Get("version"), CommandSet: set}
	return b, b.Node != "" && err == nil && set >= 1
}

// An index AwaitStatus can wait for.
const (
	AwaitView       = "view"       // NodeStatus.ViewIndex: the data plane serves it
	AwaitReconciled = "reconciled" // NodeStatus.ReconciledIndex: the HSM matches it
)

// MaxAwait bounds one AwaitStatus wait, so that a call never outlives the
// RPC client's timeout; a caller that needs longer calls again.
const MaxAwait = 5 * time.Second

// AwaitQuery asks AwaitStatus to answer once index of is reached, or after wait.
func AwaitQuery(of string, index uint64, wait time.Duration) url.Values {
	return url.Values{"of": {of}, "index": {strconv.FormatUint(index, 10)}, "wait": {wait.String()}}
}

// ParseAwait reads an AwaitStatus question; the wait is capped at MaxAwait.
func ParseAwait(q url.Values) (of string, index uint64, wait time.Duration, err error) {
	of = q.Get("of")
	if of != AwaitView && of != AwaitReconciled {
		return "", 0, 0, fmt.Errorf("of must be %s or %s", AwaitView, AwaitReconciled)
	}
	if index, err = strconv.ParseUint(q.Get("index"), 10, 64); err != nil {
		return "", 0, 0, fmt.Errorf("index: %w", err)
	}
	if wait, err = time.ParseDuration(q.Get("wait")); err != nil {
		return "", 0, 0, fmt.Errorf("wait: %w", err)
	}
	if wait < 0 {
		return "", 0, 0, errors.New("wait is negative")
	}
	return of, index, min(wait, MaxAwait), nil
}
