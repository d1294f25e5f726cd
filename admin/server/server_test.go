package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/cluster"
	"github.com/xksproxy/xksproxy/fsm"
)

// Every route of the table has exactly one handler, and the server's mux
// serves each route's method and pattern and nothing else: what the
// OpenAPI document (generated from the table) describes is what is served.
func TestServerServesExactlyTheRouteTable(t *testing.T) {
	a := &Server{}
	bindings := a.bindings()
	if len(bindings) != len(admin.Routes) {
		t.Errorf("%d handlers for %d routes", len(bindings), len(admin.Routes))
	}
	for r, b := range bindings {
		if b.raw != nil && r.Sync != admin.NoSync {
			t.Errorf("%s writes its own answer, so the table's sync choice would be ignored", r.Name)
		}
	}
	mux := a.routes().(*http.ServeMux)
	for _, r := range admin.Routes {
		args := strings.Count(r.Pattern, "{")
		path := r.Path(strings.Split(strings.Repeat("x,", args), ",")[:args]...)
		_, pattern := mux.Handler(httptest.NewRequest(r.Method, path, nil))
		if pattern != r.Method+" "+r.Pattern {
			t.Errorf("%s %s is served by %q", r.Method, path, pattern)
		}
	}
}

// The document is served to anyone holding the token.
func TestOpenAPIIsServed(t *testing.T) {
	a := &Server{cfg: Config{Token: "0123456789abcdef"}}
	srv := httptest.NewServer(a.routes())
	defer srv.Close()
	c := &admin.Client{BaseURL: srv.URL, Token: a.cfg.Token, HTTP: srv.Client()}
	doc, err := c.OpenAPIDocument(t.Context())
	if err != nil || string(doc) != string(admin.DocumentJSON()) {
		t.Fatalf("GET /v1/openapi.json: %v %.100s", err, doc)
	}
	c.Token = "wrong-token-0123456789"
	if _, err := c.OpenAPIDocument(t.Context()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without the token: %v", err)
	}
}

// A node's status reaches the operator whole: every field cluster reports
// survives into the admin API's answer.
func TestNodeStatusKeepsEveryField(t *testing.T) {
	var st cluster.NodeStatus
	fill(reflect.ValueOf(&st).Elem())
	want, _ := json.Marshal(st)
	got, _ := json.Marshal(nodeStatus(st))
	if string(got) != string(want) {
		t.Fatalf("cluster reports\n%s\nthe admin API answers\n%s", want, got)
	}
	var ack cluster.Ack
	fill(reflect.ValueOf(&ack).Elem())
	if want, got := fmt.Sprint(ack), fmt.Sprint(admin.Ack(ack)); got != want {
		t.Fatalf("ack %s became %s", want, got)
	}
}

// fill sets every exported field of v to a value other than its zero.
func fill(v reflect.Value) {
	switch {
	case v.Type() == reflect.TypeOf(time.Time{}):
		v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case v.Kind() == reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case v.Kind() == reflect.String:
		v.SetString("x")
	case v.Kind() == reflect.Bool:
		v.SetBool(true)
	case v.CanInt():
		v.SetInt(7)
	case v.CanUint():
		v.SetUint(7)
	default:
		panic("fill: " + v.Type().String())
	}
}

// ?stale= is read as a boolean on the routes that take it, refused when it
// is not one, and ignored elsewhere (a write always goes through the leader).
func TestStaleReadParameter(t *testing.T) {
	for _, c := range []struct {
		route *admin.Route
		query string
		stale bool
		bad   bool
	}{
		{admin.ListKeys, "", false, false},
		{admin.ListKeys, "?stale=true", true, false},
		{admin.ListKeys, "?stale=1", true, false},
		{admin.ListKeys, "?stale=false", false, false},
		{admin.ListKeys, "?stale=maybe", false, true},
		{admin.SaveSnapshot, "?stale=1", true, false},
		{admin.DisableKey, "?stale=true", false, false},
	} {
		r := httptest.NewRequest(c.route.Method, c.route.Path("ks", "k")+c.query, nil)
		stale, err := staleRead(c.route, r)
		if stale != c.stale || (err != nil) != c.bad {
			t.Errorf("%s%s: stale %v, error %v", c.route.Name, c.query, stale, err)
		}
		if c.bad && errorStatus(err) != http.StatusBadRequest {
			t.Errorf("%s%s: refused with %d", c.route.Name, c.query, errorStatus(err))
		}
	}
}

// The admin package names fsm's roles again (it imports none of ours):
// the same names in the same order.
func TestRolesAreFSMs(t *testing.T) {
	if len(admin.Roles) != len(fsm.Roles) {
		t.Fatalf("admin has %d roles, fsm %d", len(admin.Roles), len(fsm.Roles))
	}
	for i, r := range admin.Roles {
		if string(r) != string(fsm.Roles[i]) {
			t.Errorf("role %d: admin %q, fsm %q", i, r, fsm.Roles[i])
		}
	}
}
