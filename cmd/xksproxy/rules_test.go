package main

import (
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
	for _, name := range regexp.MustCompile(`xksproxy_[a-z_]+`).FindAllString(string(rules), -1) {
		family := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if _, ok := scraped[family]; !ok {
				family = strings.TrimSuffix(family, suffix)
			}
		}
		if _, ok := scraped[family]; !ok {
			t.Errorf("the alert rules name %s, which the node does not export", name)
		}
	}
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
