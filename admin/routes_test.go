package admin

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestRoutesAreUniqueAndFillTheirWildcards(t *testing.T) {
	names, ops := map[string]bool{}, map[string]bool{}
	for _, r := range Routes {
		if names[r.Name] || ops[r.Method+" "+r.Pattern] {
			t.Errorf("route %s (%s %s) is listed twice", r.Name, r.Method, r.Pattern)
		}
		names[r.Name], ops[r.Method+" "+r.Pattern] = true, true
		if !strings.HasPrefix(r.Pattern, "/v1/") {
			t.Errorf("%s: %s is outside /v1/", r.Name, r.Pattern)
		}
		if !slices.Contains(Roles, r.Role) {
			t.Errorf("%s: role %q is not one of %v: every route names the least role that may call it", r.Name, r.Role, Roles)
		}
	}
	if got := RemoveCredential.Path("a b", "AK/1"); got != "/v1/keystores/a%20b/credentials/AK%2F1" {
		t.Errorf("Path escapes its arguments: %s", got)
	}
}

// The OpenAPI document has one operation per route, names every path
// parameter, and every schema it refers to exists.
func TestOpenAPIDocumentMatchesTheRouteTable(t *testing.T) {
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	raw := DocumentJSON()
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	n := 0
	for _, r := range Routes {
		op, ok := doc.Paths[r.Pattern][strings.ToLower(r.Method)]
		if !ok {
			t.Errorf("%s %s is not in the document", r.Method, r.Pattern)
			continue
		}
		var o struct {
			Role        Role   `json:"x-xksproxy-role"`
			OperationID string `json:"operationId"`
			Parameters  []struct {
				Name, In string
			} `json:"parameters"`
		}
		json.Unmarshal(op, &o)
		if o.Role != r.Role {
			t.Errorf("%s: the document says role %q, the table %q", r.Name, o.Role, r.Role)
		}
		if o.OperationID != r.Name {
			t.Errorf("%s %s: operationId %q, want %q", r.Method, r.Pattern, o.OperationID, r.Name)
		}
		for _, w := range regexp.MustCompile(`\{(\w+)\}`).FindAllStringSubmatch(r.Pattern, -1) {
			found := false
			for _, p := range o.Parameters {
				found = found || p.In == "path" && p.Name == w[1]
			}
			if !found {
				t.Errorf("%s: path parameter %s is not described", r.Name, w[1])
			}
		}
	}
	for _, ops := range doc.Paths {
		n += len(ops)
	}
	if n != len(Routes) {
		t.Errorf("the document has %d operations, the route table %d", n, len(Routes))
	}
	for _, ref := range regexp.MustCompile(`"#/components/schemas/(\w+)"`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := doc.Components.Schemas[ref[1]]; !ok {
			t.Errorf("schema %s is referred to but not defined", ref[1])
		}
	}
	for _, name := range []string{"Change", "Ack", "KeyInfo", "ClusterStatus", "NodeStatus", "BackupInfo"} {
		if _, ok := doc.Components.Schemas[name]; !ok {
			t.Errorf("no schema %s", name)
		}
	}
}

// Every GET route that syncs with the leader can be read stale instead, and
// the document says so; every route that reads or changes the state
// describes the freshness headers of its answers.
func TestStaleReadsAndFreshnessHeadersAreDescribed(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct{ Name, In string } `json:"parameters"`
			Responses  map[string]struct {
				Headers map[string]json.RawMessage `json:"headers"`
			} `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(DocumentJSON(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, r := range Routes {
		if r.Method == "GET" && r.Sync != NoSync && !r.Stale {
			t.Errorf("%s syncs with the leader but cannot be read stale", r.Name)
		}
		if r.Stale && r.Method != "GET" {
			t.Errorf("%s changes the state but is marked stale-readable", r.Name)
		}
		op := doc.Paths[r.Pattern][strings.ToLower(r.Method)]
		described := false
		for _, p := range op.Parameters {
			described = described || p.In == "query" && p.Name == StaleParam
		}
		if described != r.Stale {
			t.Errorf("%s: stale parameter described %v, route takes it %v", r.Name, described, r.Stale)
		}
		for _, status := range []string{"200", "default"} {
			h := op.Responses[status].Headers
			_, index := h[AppliedIndexHeader]
			_, age := h[LeaderContactAgeHeader]
			if index != r.StatesFreshness() || age != r.StatesFreshness() {
				t.Errorf("%s %s: freshness headers described %v/%v, sent %v", r.Name, status, index, age, r.StatesFreshness())
			}
		}
	}
}
