package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionNamesTheBuild builds the binary as `make build` does and
// checks that the linker flags reach the variables they name (-X on a
// misspelt name is silently ignored): the release in VERSION, the commit
// checked out, and a build date.
func TestVersionNamesTheBuild(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	release, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "xksproxy")
	if out, err := exec.Command("make", "-C", "../..", "--no-print-directory", "build", "BIN="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	version, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(version), "\n")
	if lines[0] != "xksproxy "+strings.TrimSpace(string(release)) {
		t.Errorf("first line %q, want the release in VERSION", lines[0])
	}
	for _, want := range []string{"commit: " + strings.TrimSpace(string(head)), "built: 20", "go: go1."} {
		if !strings.Contains(string(version), "\n"+want) {
			t.Errorf("no line starting %q in:\n%s", want, version)
		}
	}
	flag, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(flag) != string(version) {
		t.Errorf("--version printed\n%s\nversion printed\n%s", flag, version)
	}
}
