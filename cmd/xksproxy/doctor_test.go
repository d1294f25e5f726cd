package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/doctor"
)

// runDoctor runs `xksproxy doctor --json` with args and env, and returns
// the report and the exit status.
func runDoctor(t *testing.T, bin string, env []string, args ...string) (*doctor.Report, int) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"doctor", "--json"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	status := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		status = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rep doctor.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("doctor %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out, stderr.String())
	}
	return &rep, status
}

// expectDoctor asserts that every check passes (port may warn: dev does
// not listen on 443) except the failures named, check name to KMS error.
func expectDoctor(t *testing.T, rep *doctor.Report, status int, failures map[string]string) {
	t.Helper()
	for _, c := range rep.Checks {
		want, shouldFail := failures[c.Name]
		switch {
		case shouldFail && (c.Status != doctor.Fail || c.KMSError != want):
			t.Errorf("%s: %s %s (%s), want fail %s", c.Name, c.Status, c.KMSError, c.Detail, want)
		case !shouldFail && c.Status == doctor.Fail:
			t.Errorf("%s fails: %s %s", c.Name, c.KMSError, c.Detail)
		case !shouldFail && c.Name == doctor.CheckPort && c.Status != doctor.Warn:
			t.Errorf("port: %s, want a warning for a port other than 443", c.Status)
		}
	}
	wantStatus := 0
	if len(failures) > 0 {
		wantStatus = 1
	}
	if status != wantStatus {
		t.Errorf("exit status %d, want %d", status, wantStatus)
	}
}

// TestDoctorAgainstADevNode runs the doctor binary against a real dev node:
// as dev made it, only the trusted-root check fails (dev's CA is private),
// with KMS's name for it; with that CA on the trusted list every check
// passes and the exit status is 0; a wrong secret is INVALID_CREDENTIALS
// and a wrong URI path XKS_PROXY_INVALID_CONFIGURATION.
func TestDoctorAgainstADevNode(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	port := strconv.Itoa(freeLoopbackPort(t))
	p := start(t, bin, "dev", "--data", dir, "--listen", "127.0.0.1:"+port)
	cf := readClientFile(t, dir, p)
	clientJSON := filepath.Join(dir, "client.json")

	rep, status := runDoctor(t, bin, nil, "--client", clientJSON)
	expectDoctor(t, rep, status, map[string]string{doctor.CheckTrustedRoot: doctor.InvalidTLSConfiguration})
	for _, c := range rep.Checks {
		if c.Name == doctor.CheckTrustedRoot && !strings.Contains(c.Detail, "private CA") {
			t.Errorf("the trusted-root failure does not say what a private CA means for KMS: %s", c.Detail)
		}
	}

	rep, status = runDoctor(t, bin, nil, "--client", clientJSON, "--trusted-roots", cf.CACertFile)
	expectDoctor(t, rep, status, nil)

	// By hand, as an operator would: the endpoint with the key store's
	// prefix, the secret from the environment, the dev CA to trust.
	prefix := strings.TrimSuffix(cf.URIPath, "/kms/xks/v1")
	byHand := []string{"--endpoint", "https://localhost:" + port + prefix, "--access-key-id", cf.AccessKeyID,
		"--region", cf.Region, "--ca", cf.CACertFile, "--trusted-roots", cf.CACertFile}
	rep, status = runDoctor(t, bin, []string{"XKSPROXY_SECRET_ACCESS_KEY=" + cf.SecretAccessKey}, byHand...)
	expectDoctor(t, rep, status, nil)
	if rep.URIPath != cf.URIPath {
		t.Errorf("--endpoint's prefix gave URI path %q, want %q", rep.URIPath, cf.URIPath)
	}

	wrongSecret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(wrongSecret, []byte(strings.Repeat("A", 43)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, status = runDoctor(t, bin, nil, append(byHand, "--secret-file", wrongSecret)...)
	expectDoctor(t, rep, status, map[string]string{doctor.CheckCredential: doctor.InvalidCredentials})

	rep, status = runDoctor(t, bin, nil, "--client", clientJSON, "--trusted-roots", cf.CACertFile,
		"--endpoint", "https://localhost:"+port+"/no-such-key-store")
	expectDoctor(t, rep, status, map[string]string{doctor.CheckURIPath: doctor.InvalidConfiguration})

	// The table names the KMS error and the fix.
	out, err := exec.Command(bin, "doctor", "--client", clientJSON).Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("the table run: %v", err)
	}
	for _, want := range []string{"FAIL  trusted-root", "KMS reports: XKS_PROXY_INVALID_TLS_CONFIGURATION", "fix: get the certificate from a CA on AWS's list"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
}
