package cluster

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
)

// Profiles are served to the admin API's holders only.
func TestDebugProfilesNeedTheAdminToken(t *testing.T) {
	c := newTestCluster(t, 1)
	client := c.nodes[0].admin
	data, err := client.Profile(t.Context(), "goroutine", url.Values{"debug": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("goroutine profile:")) {
		t.Fatalf("goroutine profile: %.200s", data)
	}
	if _, err := client.Profile(t.Context(), "profile", url.Values{"seconds": {"1"}}); err != nil {
		t.Fatalf("CPU profile: %v", err)
	}
	anonymous := *client
	anonymous.Token = "wrong"
	for _, p := range []struct {
		name  string
		query url.Values
	}{{"heap", nil}, {"profile", url.Values{"seconds": {"1"}}}, {"trace", url.Values{"seconds": {"1"}}}} {
		if _, err := anonymous.Profile(t.Context(), p.name, p.query); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("%s without the token: %v", p.name, err)
		}
	}
}
