package noderpc

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Nodes of the previous build call these routes during a rolling upgrade:
// their methods and paths are pinned as that build wrote them by hand.
func TestRoutesKeepTheirWirePaths(t *testing.T) {
	want := map[Route]bool{
		{"POST", "/v1/apply"}: true, {"POST", "/v1/join"}: true, {"POST", "/v1/remove"}: true,
		{"POST", "/v1/removed"}: true, {"POST", "/v1/restore"}: true, {"GET", "/v1/haskey"}: true,
		{"GET", "/v1/leader-index"}: true, {"GET", "/v1/status"}: true, {"GET", "/v1/await-status"}: true, {"GET", "/v1/configuration"}: true,
	}
	for _, r := range Routes {
		if !want[r] {
			t.Errorf("route %s is not one the protocol has", r.Pattern())
		}
		delete(want, r)
	}
	for r := range want {
		t.Errorf("route %s is missing", r.Pattern())
	}
}

// The messages' JSON, as the previous build writes and reads it.
func TestMessagesKeepTheirJSON(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{JoinRequest{ID: "n1", Address: "10.0.0.1:7000"}, `{"id":"n1","address":"10.0.0.1:7000"}`},
		{ApplyResponse{Index: 7}, `{"index":7}`},
		{ApplyResponse{Error: "not the leader"}, `{"index":0,"error":"not the leader"}`},
		{HasKeyResponse{Present: true}, `{"present":true}`},
		{LeaderIndexResponse{Index: 9, Term: 2}, `{"index":9,"term":2}`},
	} {
		got, _ := json.Marshal(c.v)
		if string(got) != c.want {
			t.Errorf("%T: %s, want %s", c.v, got, c.want)
		}
	}
	old := `{"id":"n1","clusterAddress":"a","apiAddress":"b","raftState":"Follower","appliedIndex":3,"commitIndex":4,` +
		`"viewIndex":3,"ready":true,"hsmStatus":"ACTIVE","time":"2026-01-02T03:04:05Z"}`
	var st NodeStatus
	if err := json.Unmarshal([]byte(old), &st); err != nil || st.ID != "n1" || st.ViewIndex != 3 || !st.Ready || st.HSM != "ACTIVE" {
		t.Errorf("an older build's status reads as %+v (%v)", st, err)
	}
}

func TestQueriesRoundTrip(t *testing.T) {
	b := Build{Node: "n2", Version: "v1.2", CommandSet: 3}
	for _, confirm := range []bool{false, true} {
		q := LeaderIndexQuery(b, confirm)
		if got, ok := ParseBuild(q); !ok || got != b || ConfirmsLeadership(q) != confirm {
			t.Errorf("confirm %v: %+v %v %v", confirm, got, ok, ConfirmsLeadership(q))
		}
	}
	if _, ok := ParseBuild(HasKeyQuery("x")); ok {
		t.Error("a question without a build counts as one")
	}
	if HasKeyLabel(HasKeyQuery("a b&c")) != "a b&c" {
		t.Error("the HasKey label does not survive its query")
	}
	of, index, wait, err := ParseAwait(AwaitQuery(AwaitReconciled, 12, time.Minute))
	if err != nil || of != AwaitReconciled || index != 12 || wait != MaxAwait {
		t.Errorf("await: %s %d %v %v (the wait is capped at %v)", of, index, wait, err, MaxAwait)
	}
	for _, q := range []string{"of=x&index=1&wait=1s", "of=view&index=-1&wait=1s", "of=view&index=1&wait=soon", "of=view&index=1&wait=-1s"} {
		vals, _ := url.ParseQuery(q)
		if _, _, _, err := ParseAwait(vals); err == nil {
			t.Errorf("%s was accepted", q)
		}
	}
}

// Call sends the route's method, a []byte as it is and anything else as
// JSON, and decodes the answer whatever its status.
func TestCallSendsTheRouteAndDecodesTheAnswer(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+string(body))
		WriteJSON(w, NotLeaderStatus, ApplyResponse{Error: "not the leader"})
	}))
	defer srv.Close()
	c := &Client{HTTP: srv.Client()}
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	var res ApplyResponse
	status, err := c.Call(ctx, addr, Apply, nil, []byte{1, 2}, &res)
	if err != nil || status != NotLeaderStatus || res.Error != "not the leader" {
		t.Fatalf("apply: %d %v %+v", status, err, res)
	}
	c.Call(ctx, addr, Join, nil, JoinRequest{ID: "n"}, nil)
	c.Call(ctx, addr, HasKey, HasKeyQuery("l"), nil, nil)
	want := []string{"POST /v1/apply \x01\x02", `POST /v1/join {"id":"n","address":""}`, "GET /v1/haskey?label=l "}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("sent %q, want %q", got, want)
	}
}
