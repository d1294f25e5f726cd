package cluster

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// The node-to-node RPCs ride the cluster port's mutual TLS: forwarding a
// write to the leader, joining, removing, and asking a node how it is.

// NodeStatus is what a node says of itself (the node RPC protocol's).
type NodeStatus = noderpc.NodeStatus

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
			var res noderpc.HasKeyResponse
			if string(s.ID) == n.cfg.NodeID {
				ok, err := n.hsm.HasKey(label)
				res.Present = ok && err == nil
			} else {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				status, err := n.call(rctx, peer{id: string(s.ID), addr: string(s.Address)}, noderpc.HasKey, noderpc.HasKeyQuery(label), nil, &res)
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

func (n *Node) rpcHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(noderpc.Apply.Pattern(), func(w http.ResponseWriter, r *http.Request) {
		cmd, err := io.ReadAll(io.LimitReader(r.Body, maxCommandBytes))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		index, err := n.applyLocal(cmd)
		writeApplyResult(w, index, err)
	})
	mux.HandleFunc(noderpc.Join.Pattern(), func(w http.ResponseWriter, r *http.Request) {
		var req noderpc.JoinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// A node joins as the node its certificate names; a member may
		// pass on another's join (forwarding to the leader, an operator's
		// `cluster join`), and the leader then proves the id at its address.
		if p, _ := rpcPeer(r); p.node != req.ID && !n.admitsMember(p.node) {
			noderpc.WriteJSON(w, http.StatusForbidden, noderpc.ApplyResponse{Error: fmt.Sprintf("node %s may not join as %s: a node joins as the node its certificate names", p.node, req.ID)})
			return
		}
		writeApplyResult(w, 0, n.addVoterLocal(req.ID, req.Address))
	})
	mux.HandleFunc(noderpc.Remove.Pattern(), func(w http.ResponseWriter, r *http.Request) {
		var req noderpc.JoinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeApplyResult(w, 0, n.removeServerLocal(req.ID, true))
	})
	mux.HandleFunc(noderpc.Restore.Pattern(), n.restoreRPC)
	mux.HandleFunc(noderpc.HasKey.Pattern(), func(w http.ResponseWriter, r *http.Request) {
		ok, err := n.hsm.HasKey(noderpc.HasKeyLabel(r.URL.Query()))
		if err != nil {
			noderpc.WriteJSON(w, http.StatusServiceUnavailable, noderpc.HasKeyResponse{Error: err.Error()})
			return
		}
		noderpc.WriteJSON(w, http.StatusOK, noderpc.HasKeyResponse{Present: ok})
	})
	mux.HandleFunc(noderpc.Removed.Pattern(), func(w http.ResponseWriter, r *http.Request) {
		n.markRemoved()
		noderpc.WriteJSON(w, http.StatusOK, noderpc.ApplyResponse{})
	})
	mux.HandleFunc(noderpc.LeaderIndex.Pattern(), n.serveLeaderIndex)
	mux.HandleFunc(noderpc.Status.Pattern(), func(w http.ResponseWriter, r *http.Request) {
		noderpc.WriteJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc(noderpc.Configuration.Pattern(), n.serveConfiguration)
	mux.HandleFunc(noderpc.AwaitStatus.Pattern(), n.serveAwaitStatus)
	return n.membersOnly(mux)
}

func writeApplyResult(w http.ResponseWriter, index uint64, err error) {
	var rule *RuleError
	switch {
	case errors.Is(err, errNotLeader):
		noderpc.WriteJSON(w, noderpc.NotLeaderStatus, noderpc.ApplyResponse{Error: err.Error()})
	case errors.As(err, &rule):
		noderpc.WriteJSON(w, http.StatusConflict, noderpc.ApplyResponse{Error: err.Error(), Kind: ruleKind(err)})
	case err != nil:
		noderpc.WriteJSON(w, http.StatusInternalServerError, noderpc.ApplyResponse{Error: err.Error()})
	default:
		noderpc.WriteJSON(w, http.StatusOK, noderpc.ApplyResponse{Index: index})
	}
}

// peer is a node to call: the node that must answer at addr ("" for any
// node of the cluster: a join address), and whether a node whose
// certificate was revoked may (to be told of its removal).
type peer struct {
	id, addr     string
	allowRevoked bool
}

// host is the URL host that stands for p. TLS is already done by the time
// HTTP speaks, so the host is never looked up: it only brings p to the
// dialer, and keeps apart in the connection pool the connections made for
// different expected nodes, so that a connection checked for one is never
// reused for another.
func (p peer) host() string {
	mode := "m"
	if p.allowRevoked {
		mode = "r"
	}
	return fmt.Sprintf("%s.i%x.a%x.cluster:1", mode, p.id, p.addr)
}

func peerOfHost(hostport string) (peer, error) {
	host, _, _ := net.SplitHostPort(hostport)
	parts := strings.Split(host, ".")
	if len(parts) != 4 || len(parts[1]) < 1 || len(parts[2]) < 1 {
		return peer{}, fmt.Errorf("not a peer host: %s", hostport)
	}
	id, err1 := hex.DecodeString(parts[1][1:])
	addr, err2 := hex.DecodeString(parts[2][1:])
	if err := errors.Join(err1, err2); err != nil {
		return peer{}, fmt.Errorf("not a peer host: %s", hostport)
	}
	return peer{id: string(id), addr: string(addr), allowRevoked: parts[0] == "r"}, nil
}

// newRPCClient dials peers through the mux, which checks that the node
// that answers is the one the call is for.
func (n *Node) newRPCClient() *noderpc.Client {
	return &noderpc.Client{Describe: describePeerHost, HTTP: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, hostport string) (net.Conn, error) {
				p, err := peerOfHost(hostport)
				if err != nil {
					return nil, err
				}
				return n.mux.dial(ctx, dialTarget{addr: p.addr, id: p.id, allowRevoked: p.allowRevoked}, protoRPC)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     60 * time.Second,
		},
	}}
}

// call runs route r on the node to, over a connection that checked to's
// identity.
func (n *Node) call(ctx context.Context, to peer, r noderpc.Route, query url.Values, in, out any) (int, error) {
	return n.rpc.Call(ctx, to.host(), r, query, in, out)
}

// describePeerHost names a peer host by its address in messages.
func describePeerHost(hostport string) string {
	if p, err := peerOfHost(hostport); err == nil {
		return p.addr
	}
	return hostport
}

// forward runs a leader-only RPC on the leader, waiting through an election
// (a short wait, not a failure) until ctx ends.
func (n *Node) forward(ctx context.Context, route noderpc.Route, query url.Values, in any) (uint64, error) {
	for {
		addr, id := n.raft.LeaderWithID()
		if addr != "" {
			var res noderpc.ApplyResponse
			status, err := n.call(ctx, peer{id: string(id), addr: string(addr)}, route, query, in, &res)
			switch {
			case err == nil && status == http.StatusOK:
				return res.Index, nil
			case err == nil && status == http.StatusConflict:
				return 0, &RuleError{forwardedRefusal(res)}
			case err == nil && status != noderpc.NotLeaderStatus:
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
