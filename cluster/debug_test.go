package cluster

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// Profiles are served to the admin API's holders only.
func TestDebugProfilesNeedTheAdminToken(t *testing.T) {
	c := newTestCluster(t, 1)
	admin := c.nodes[0].admin
	data, err := admin.Raw(http.MethodGet, "/v1/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("goroutine profile:")) {
		t.Fatalf("goroutine profile: %.200s", data)
	}
	if _, err := admin.Raw(http.MethodGet, "/v1/debug/pprof/profile?seconds=1", nil); err != nil {
		t.Fatalf("CPU profile: %v", err)
	}
	anonymous := *admin
	anonymous.Token = "wrong"
	for _, p := range []string{"/v1/debug/pprof/heap", "/v1/debug/pprof/profile?seconds=1", "/v1/debug/pprof/trace?seconds=1"} {
		if _, err := anonymous.Raw(http.MethodGet, p, nil); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("%s without the token: %v", p, err)
		}
	}
}
