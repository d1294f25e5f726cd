package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/xksproxy/xksproxy/bench"
	"github.com/xksproxy/xksproxy/bench/fakexks"
)

// writeClientFile writes a client.json like the one `xksproxy dev` writes.
func writeClientFile(t *testing.T, dir string, fields map[string]any) string {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "client.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func parse(t *testing.T, args ...string) (bench.Config, error) {
	t.Helper()
	o := newOptions()
	cmd := &cobra.Command{Use: "run"}
	o.bind(cmd, true)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return o.config()
}

func TestConfigFromClientFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	client := writeClientFile(t, dir, map[string]any{
		"endpoint": "https://127.0.0.1:8443", "endpoints": []string{"https://127.0.0.1:8443", "https://127.0.0.1:8444"},
		"uriPath": "/demo/kms/xks/v1", "keyStore": "demo", "accessKeyId": "AKIDFROMFILE", "secretAccessKey": "secret-from-file",
		"region": "us-east-1", "keyId": "demo-key", "caCertFile": "/tmp/ca.pem", "healthEndpoints": []string{"http://127.0.0.1:9000"},
		"someFutureField": true,
	})
	t.Setenv(bench.SecretEnv, "")

	cfg, err := parse(t, "--client", client)
	if err != nil {
		t.Fatal(err)
	}
	tg := cfg.Target
	if !reflect.DeepEqual(tg.Endpoints, []string{"https://127.0.0.1:8443", "https://127.0.0.1:8444"}) || tg.URIPath != "/demo/kms/xks/v1" ||
		tg.AccessKeyID != "AKIDFROMFILE" || tg.Secret.Reveal() != "secret-from-file" || tg.Region != "us-east-1" ||
		!reflect.DeepEqual(tg.KeyIDs, []string{"demo-key"}) || tg.CAFile != "/tmp/ca.pem" || tg.KeyStore != "demo" {
		t.Fatalf("target from client.json: %+v", tg)
	}
	if cfg.RatePerKey != 100 || cfg.Mix != bench.DefaultMix || cfg.CDIV || cfg.Budget != 250*time.Millisecond || cfg.Duration != 30*time.Second {
		t.Errorf("defaults: %+v", cfg)
	}

	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("secret-from-secret-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = parse(t, "--client", client, "--endpoint", "https://10.0.0.1:443", "--key", "a", "--key", "b",
		"--region", "eu-west-1", "--secret-file", secretFile, "--cdiv", "on", "--mix", "decrypt=1", "--rate", "1800",
		"--at", "10s=echo hi", "--at", "20=true", "--spread", "per-node", "--budget", "10ms", "--keys", "4")
	if err != nil {
		t.Fatal(err)
	}
	tg = cfg.Target
	if !reflect.DeepEqual(tg.Endpoints, []string{"https://10.0.0.1:443"}) || !reflect.DeepEqual(tg.KeyIDs, []string{"a", "b"}) ||
		tg.Region != "eu-west-1" || tg.Secret.Reveal() != "secret-from-secret-file" || tg.AccessKeyID != "AKIDFROMFILE" {
		t.Fatalf("flags over client.json: %+v", tg)
	}
	if !cfg.CDIV || cfg.Mix != (bench.Mix{0, 1, 0, 0}) || cfg.RatePerKey != 1800 || cfg.Spread != bench.SpreadPerNode ||
		cfg.Budget != 10*time.Millisecond || cfg.Keys != 4 ||
		!reflect.DeepEqual(cfg.Hooks, []bench.Hook{{At: 10 * time.Second, Command: "echo hi"}, {At: 20 * time.Second, Command: "true"}}) {
		t.Errorf("load flags: %+v", cfg)
	}

	t.Setenv(bench.SecretEnv, "secret-from-env")
	cfg, err = parse(t, "--endpoint", "https://h:1", "--uri-path", "/kms/xks/v1", "--access-key-id", "AKID", "--region", "r", "--key", "k")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Target.Secret.Reveal() != "secret-from-env" || cfg.Target.Validate() != nil {
		t.Errorf("flags-only target %+v: %v", cfg.Target, cfg.Target.Validate())
	}

	if _, err := parse(t, "--client", client, "--mix", "sign=1"); err == nil {
		t.Error("a bad mix was accepted")
	}
	if _, err := parse(t, "--client", client, "--at", "soon=true"); err == nil {
		t.Error("a bad hook time was accepted")
	}
}

func TestOnOff(t *testing.T) {
	var b onOff
	for in, want := range map[string]bool{"on": true, "OFF": false, "true": true, "0": false, "yes": true} {
		if err := b.Set(in); err != nil || bool(b) != want {
			t.Errorf("Set(%q) = %v, %v", in, b, err)
		}
	}
	if err := b.Set("maybe"); err == nil {
		t.Error("Set(maybe) accepted")
	}
}

func startFake(t *testing.T) (*fakexks.Server, string) {
	t.Helper()
	dir := t.TempDir()
	srv, err := fakexks.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, writeClientFile(t, dir, map[string]any{
		"endpoint": srv.URL, "endpoints": []string{srv.URL}, "uriPath": fakexks.URIPath, "keyStore": "test",
		"accessKeyId": fakexks.AccessKeyID, "secretAccessKey": fakexks.Secret, "region": fakexks.Region,
		"keyId": "k1", "caCertFile": srv.CAFile,
	})
}

func TestCommandLineEndToEnd(t *testing.T) {
	srv, client := startFake(t)
	t.Setenv(bench.SecretEnv, "")
	outA, outB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	short := []string{"--client", client, "--rate", "100", "--warmup", "200ms", "--duration", "1s", "--quiet", "--budget", "1m"}
	profile := filepath.Join(t.TempDir(), "cpu.pprof")
	if code := execute(append([]string{"run", "--out", outA, "--cdiv", "on", "--at", "300ms=true", "--cpuprofile", profile}, short...)); code != 0 {
		t.Fatalf("run exited %d", code)
	}
	// A pprof profile is a gzipped protocol buffer.
	if b, err := os.ReadFile(profile); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("CPU profile: %d bytes, %v", len(b), err)
	}
	for _, f := range []string{"result.json", "summary.txt", "timeseries.csv", "report.html"} {
		if _, err := os.Stat(filepath.Join(outA, f)); err != nil {
			t.Error(err)
		}
	}
	res, err := bench.ReadResult(filepath.Join(outA, "result.json"))
	if err != nil || !res.Config.CDIV || len(res.Hooks) != 1 || !res.Hooks[0].Ran {
		t.Fatalf("result %+v, %v", res, err)
	}
	// A proxy that throttles past 50/s: errors, FAIL, exit 1.
	srv.ThrottleAbove(50)
	if code := execute(append([]string{"run", "--out", outB}, short...)); code != bench.ExitFail {
		t.Fatalf("run against a throttling proxy exited %d", code)
	}
	if code := execute([]string{"compare", filepath.Join(outA, "result.json"), outB}); code != 0 {
		t.Fatalf("compare exited %d", code)
	}
	if code := execute([]string{"compare", outA, filepath.Join(outB, "missing.json")}); code == 0 {
		t.Fatal("compare of a missing file succeeded")
	}
}

func TestExitCodes(t *testing.T) {
	srv, client := startFake(t)
	t.Setenv(bench.SecretEnv, "not-the-secret-0123456789abcdefghijklmnopqrs")
	short := []string{"--client", client, "--rate", "50", "--warmup", "100ms", "--duration", "1s", "--quiet", "--out", t.TempDir()}
	if code := execute(append([]string{"run"}, short...)); code != exitCouldNotRun {
		t.Errorf("a refused credential exited %d, want %d", code, exitCouldNotRun)
	}
	t.Setenv(bench.SecretEnv, "")
	srv.WrongPlaintext(true)
	if code := execute(append([]string{"run"}, short...)); code != bench.ExitWrong {
		t.Errorf("wrong plaintext exited %d, want %d", code, bench.ExitWrong)
	}
	if code := execute([]string{"run", "--rate", "-1"}); code != exitCouldNotRun {
		t.Errorf("bad flags exited %d", code)
	}
	if code := execute([]string{"find-max", "--client", client, "--factor", "1", "--quiet"}); code != exitCouldNotRun {
		t.Errorf("find-max with factor 1 exited %d", code)
	}
	// find-max sets the rate itself: a --rate it would ignore is refused.
	if code := execute([]string{"find-max", "--client", client, "--rate", "1500", "--quiet"}); code != exitCouldNotRun {
		t.Errorf("find-max with --rate exited %d", code)
	}
}
