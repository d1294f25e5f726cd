package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/internal/testmetrics"
)

// checkAlertRules reads deploy/xksproxy-rules.yml against a live node's
// scrape: every xksproxy_ metric an alert names is one the node exports,
// every alert has a severity and a runbook_url whose section exists in
// deploy/runbook.md, and some alert fires when a node's metrics vanish and
// when a certificate has under 10 days left.
func checkAlertRules(t *testing.T, scraped testmetrics.Families) {
	t.Helper()
	rules, err := os.ReadFile("../../deploy/xksproxy-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	runbook, err := os.ReadFile("../../deploy/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	checkNamesExported(t, "the alert rules", string(rules), scraped)
	sections := map[string]bool{}
	for _, line := range strings.Split(string(runbook), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			sections[strings.ToLower(h)] = true
		}
	}
	alerts := strings.Split(string(rules), "- alert: ")[1:]
	if len(alerts) < 10 {
		t.Fatalf("%d alerts in the rules", len(alerts))
	}
	var nodeDown, certificate bool
	for _, a := range alerts {
		name := strings.Fields(a)[0]
		severity := regexp.MustCompile(`\n\s+severity: (page|ticket)\n`).FindStringSubmatch(a)
		anchor := regexp.MustCompile(`\n\s+runbook_url: https://github.com/xksproxy/xksproxy/blob/main/deploy/runbook.md#([a-z]+)\n`).FindStringSubmatch(a)
		if severity == nil {
			t.Errorf("alert %s has no severity page or ticket", name)
		}
		if anchor == nil || !sections[anchor[1]] {
			t.Errorf("alert %s has no runbook_url to a section of deploy/runbook.md (%v)", name, anchor)
		}
		nodeDown = nodeDown || strings.Contains(a, "absent(") && strings.Contains(a, "up{")
		certificate = certificate || strings.Contains(a, "xksproxy_tls_certificate_expiry_seconds < 10 * 86400")
	}
	if !nodeDown || !certificate {
		t.Errorf("an alert for vanished metrics (absent, up): %v; for a certificate under 10 days: %v", nodeDown, certificate)
	}
}

// checkNamesExported fails t for each xksproxy_ metric that text names and
// the scrape lacks (a histogram's _bucket, _sum and _count are its family's).
func checkNamesExported(t *testing.T, what, text string, scraped testmetrics.Families) {
	t.Helper()
	for _, name := range regexp.MustCompile(`xksproxy_[a-z_]+`).FindAllString(text, -1) {
		family := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if _, ok := scraped[family]; !ok {
				family = strings.TrimSuffix(family, suffix)
			}
		}
		if _, ok := scraped[family]; !ok {
			t.Errorf("%s name %s, which the node does not export", what, name)
		}
	}
}

// checkDashboard reads deploy/grafana-dashboard.json: valid JSON, every
// panel with a query, and every metric its queries and variables name
// exported by the node scraped.
func checkDashboard(t *testing.T, scraped testmetrics.Families) {
	t.Helper()
	b, err := os.ReadFile("../../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dashboard); err != nil {
		t.Fatalf("deploy/grafana-dashboard.json: %v", err)
	}
	if dashboard.UID == "" || len(dashboard.Panels) < 10 {
		t.Fatalf("the dashboard has uid %q and %d panels", dashboard.UID, len(dashboard.Panels))
	}
	var queries []string
	for _, p := range dashboard.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			if !strings.Contains(target.Expr, "xksproxy_") {
				t.Errorf("panel %q queries %q, no xksproxy metric", p.Title, target.Expr)
			}
			queries = append(queries, target.Expr)
		}
	}
	for _, v := range dashboard.Templating.List {
		if q, ok := v.Query.(string); ok {
			queries = append(queries, q)
		}
	}
	checkNamesExported(t, "the dashboard's queries", strings.Join(queries, "\n"), scraped)
}
