package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"
)

// The node-to-node RPCs ride the cluster port's mutual TLS: forwarding a
// write to the leader, joining, removing, and asking a node how it is.

// NodeStatus is what a node says of itself.
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

type joinRequest struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

type applyResponse struct {
	Index uint64 `json:"index"`
	Error string `json:"error,omitempty"`
	// Kind names the fsm rule a refusal broke (ruleKinds), so that the
	// node that forwarded the change answers the operator as the leader would.
	Kind string `json:"kind,omitempty"`
}

type hasKeyResponse struct {
	Present bool   `json:"present"`
	Error   string `json:"error,omitempty"`
}

// nodesLacking asks every reachable voter whether its HSM holds label and
// names those that do not (or cannot tell). Unreachable voters are not
// live; they check for themselves when they return, and stay not-ready
// while the label is missing.
func (n *Node) nodesLacking(ctx context.Context, label string) []string {
	servers, err := n.Servers()
	if err != nil {
		return []string{"the cluster configuration (" + err.Error() + ")"}
	}
	var mu sync.Mutex
	var lacking []string
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res hasKeyResponse
			if string(s.ID) == n.cfg.NodeID {
				ok, err := n.hsm.HasKey(label)
				res.Present = ok && err == nil
			} else {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				status, err := n.rpc(rctx, string(s.Address), "/v1/haskey?label="+url.QueryEscape(label), nil, &res)
				cancel()
				if err != nil && status == 0 {
					return
				}
			}
			if !res.Present {
				mu.Lock()
				lacking = append(lacking, string(s.ID))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Strings(lacking)
	return lacking
}

// errNotLeader tells a forwarding node to find the leader again.
var errNotLeader = errors.New("not the leader")

const rpcNotLeaderStatus = http.StatusMisdirectedRequest

func (n *Node) rpcHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apply", func(w http.ResponseWriter, r *http.Request) {
		cmd, err := io.ReadAll(io.LimitReader(r.Body, maxCommandBytes))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		index, err := n.applyLocal(cmd)
		writeApplyResult(w, index, err)
	})
	mux.HandleFunc("POST /v1/join", func(w http.ResponseWriter, r *http.Request) {
		var req joinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeApplyResult(w, 0, n.addVoterLocal(req.ID, req.Address))
	})
	mux.HandleFunc("POST /v1/remove", func(w http.ResponseWriter, r *http.Request) {
		var req joinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeApplyResult(w, 0, n.removeServerLocal(req.ID))
	})
	mux.HandleFunc("POST /v1/restore", n.restoreRPC)
	mux.HandleFunc("GET /v1/haskey", func(w http.ResponseWriter, r *http.Request) {
		ok, err := n.hsm.HasKey(r.URL.Query().Get("label"))
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, hasKeyResponse{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, hasKeyResponse{Present: ok})
	})
	mux.HandleFunc("POST /v1/removed", func(w http.ResponseWriter, r *http.Request) {
		n.markRemoved()
		writeJSON(w, http.StatusOK, applyResponse{})
	})
	mux.HandleFunc("GET /v1/leader-index", n.serveLeaderIndex)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	return mux
}

func writeApplyResult(w http.ResponseWriter, index uint64, err error) {
	var rule *RuleError
	switch {
	case errors.Is(err, errNotLeader):
		writeJSON(w, rpcNotLeaderStatus, applyResponse{Error: err.Error()})
	case errors.As(err, &rule):
		writeJSON(w, http.StatusConflict, applyResponse{Error: err.Error(), Kind: ruleKind(err)})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, applyResponse{Error: err.Error()})
	default:
		writeJSON(w, http.StatusOK, applyResponse{Index: index})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// newRPCClient dials peers through the mux: TLS is already done by the time
// HTTP speaks, so the URLs are http://clusterAddr.
func (n *Node) newRPCClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return n.mux.dial(ctx, addr, protoRPC)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     60 * time.Second,
		},
	}
}

// rpc POSTs (or GETs when in is nil) to a peer and decodes the answer.
func (n *Node) rpc(ctx context.Context, addr, path string, in, out any) (int, error) {
	method, body := http.MethodGet, io.Reader(nil)
	switch v := in.(type) {
	case nil:
	case []byte:
		method, body = http.MethodPost, bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		method, body = http.MethodPost, bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return 0, err
	}
	resp, err := n.rpcClient.Do(req)
	if err != nil {
		// The URL's http:// is only what HTTP speaks inside the mutual
		// TLS the mux already did: say so rather than print it.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return 0, fmt.Errorf("cluster RPC %s %s%s (mutual TLS): %w", method, addr, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s from %s: %d %q", path, addr, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, nil
}

// forward runs a leader-only RPC on the leader, waiting through an election
// (a short wait, not a failure) until ctx ends.
func (n *Node) forward(ctx context.Context, path string, in any) (uint64, error) {
	for {
		addr, _ := n.raft.LeaderWithID()
		if addr != "" {
			var res applyResponse
			status, err := n.rpc(ctx, string(addr), path, in, &res)
			switch {
			case err == nil && status == http.StatusOK:
				return res.Index, nil
			case err == nil && status == http.StatusConflict:
				return 0, &RuleError{forwardedRefusal(res)}
			case err == nil && status != rpcNotLeaderStatus:
				return 0, errors.New(res.Error)
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no leader answered within the deadline: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
