package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDebianPackage builds the package with `make dist`, installs it on
// this machine, runs the installed binary as the packaged user against
// SoftHSMv2 tokens (a dev node serving on loopback, and `serve --check`
// with the packaged state directory), then removes and purges it and
// checks that nothing is left. It changes the machine (a package, a system
// user), so it runs only when asked: XKSPROXY_PACKAGE_TEST=1, as root with
// dpkg (make test-package).
func TestDebianPackage(t *testing.T) {
	if os.Getenv("XKSPROXY_PACKAGE_TEST") == "" {
		t.Skip("installs a package on this machine: set XKSPROXY_PACKAGE_TEST=1 (make test-package)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to install a package")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("needs dpkg")
	}
	if exec.Command("dpkg-query", "-W", "-f", "${Status}", "xksproxy").Run() == nil {
		t.Skip("an xksproxy package is installed already; not touching it")
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dist := t.TempDir()
	out := run("make", "-C", "../..", "--no-print-directory", "dist", "DIST="+dist, "BIN="+filepath.Join(dist, "xksproxy"))
	debs, _ := filepath.Glob(filepath.Join(dist, "xksproxy_*.deb"))
	tars, _ := filepath.Glob(filepath.Join(dist, "xksproxy-*.tar.gz"))
	if len(debs) != 1 || len(tars) != 1 {
		t.Fatalf("make dist made %v and %v:\n%s", debs, tars, out)
	}
	deb := debs[0]

	control := run("dpkg-deb", "--field", deb, "Depends", "Suggests")
	if strings.Contains(strings.SplitN(control, "Suggests", 2)[0], "softhsm") || !strings.Contains(control, "Suggests: softhsm2") {
		t.Errorf("softhsm2 must be a suggestion only:\n%s", control)
	}
	if conffiles := run("dpkg-deb", "--ctrl-tarfile", deb); !strings.Contains(conffiles, "conffiles") {
		t.Error("no conffiles in the control archive")
	}
	tarList := run("tar", "tzf", tars[0])
	for _, f := range []string{"/xksproxy", "/xksproxy.service", "/node.toml", "/three-site/site-a.toml"} {
		if !strings.Contains(tarList, f+"\n") {
			t.Errorf("the tarball has no %s:\n%s", f, tarList)
		}
	}

	t.Cleanup(func() { exec.Command("dpkg", "--purge", "xksproxy").Run() })
	run("dpkg", "-i", deb)
	if got := run("dpkg-query", "-W", "-f", "${Conffiles}", "xksproxy"); !strings.Contains(got, "/etc/xksproxy/node.toml") {
		t.Errorf("node.toml is not a conffile: %q", got)
	}
	passwd := strings.Split(strings.TrimSpace(run("getent", "passwd", "xksproxy")), ":")
	uid, _ := strconv.Atoi(passwd[2])
	if uid == 0 || uid >= 1000 || passwd[5] != "/var/lib/xksproxy" || !strings.HasSuffix(passwd[6], "nologin") {
		t.Errorf("the packaged user is not a system user without a shell: %v", passwd)
	}
	assertOwner := func(path string, mode os.FileMode, owner, group string) {
		t.Helper()
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		gotOwner := strings.TrimSpace(run("id", "-nu", strconv.Itoa(int(sys.Uid))))
		gotGroup := strings.SplitN(run("getent", "group", strconv.Itoa(int(sys.Gid))), ":", 2)[0]
		if st.Mode().Perm() != mode || gotOwner != owner || gotGroup != group {
			t.Errorf("%s: %v %s:%s, want %v %s:%s", path, st.Mode().Perm(), gotOwner, gotGroup, mode, owner, group)
		}
	}
	assertOwner("/var/lib/xksproxy", 0o700, "xksproxy", "xksproxy")
	assertOwner("/etc/xksproxy", 0o750, "root", "xksproxy")
	assertOwner("/etc/xksproxy/node.toml", 0o640, "root", "xksproxy")
	head, _ := exec.Command("git", "rev-parse", "HEAD").Output()
	if v := run("/usr/bin/xksproxy", "version"); !strings.Contains(v, "commit: "+strings.TrimSpace(string(head))) {
		t.Errorf("the installed binary does not name the commit:\n%s", v)
	}
	if out, err := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/xksproxy.service").CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The installed binary as the packaged user, on its own SoftHSMv2 tokens.
	home, err := os.MkdirTemp("", "xksproxy-package-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(home)
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(home, "dev")
	run("install", "-d", "-o", "xksproxy", "-g", "xksproxy", "-m", "0700", data)
	listen := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	p := start(t, "runuser", "-u", "xksproxy", "--", "/usr/bin/xksproxy", "dev", "--data", data, "--listen", listen)
	client := readClientFile(t, data, p)
	c, err := client.Client(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RoundTrip(client.KeyID, testMetadata("Encrypt"), []byte("packaged"), nil); err != nil {
		t.Fatalf("a signed round trip through the packaged binary: %v", err)
	}
	resp, err := http.Get("http://" + readHealthListen(t, data) + "/ready")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/ready: %v %v", resp, err)
	}
	resp.Body.Close()
	if ps := run("ps", "-o", "user=", "--ppid", strconv.Itoa(childPid(t, p))); !strings.Contains(ps, "xksproxy") {
		t.Errorf("the nodes do not run as xksproxy: %q", ps)
	}
	config, err := os.ReadFile(filepath.Join(data, "node1", "node.toml"))
	if err != nil {
		t.Fatal(err)
	}
	packaged := strings.Replace(string(config), `data_dir = "`+filepath.Join(data, "node1")+`"`, `data_dir = "/var/lib/xksproxy"`, 1)
	packagedPath := filepath.Join(data, "packaged.toml")
	if err := os.WriteFile(packagedPath, []byte(packaged), 0o600); err != nil {
		t.Fatal(err)
	}
	run("chown", "xksproxy:xksproxy", packagedPath)
	if out := run("runuser", "-u", "xksproxy", "--", "/usr/bin/xksproxy", "serve", "--check", "--config", packagedPath); !strings.Contains(out, "ok    data_dir") {
		t.Errorf("serve --check as xksproxy with the packaged state directory:\n%s", out)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30 s of SIGTERM")
	}

	run("dpkg", "-r", "xksproxy")
	if _, err := os.Stat("/usr/bin/xksproxy"); !os.IsNotExist(err) {
		t.Errorf("dpkg -r left the binary: %v", err)
	}
	if _, err := os.Stat("/etc/xksproxy/node.toml"); err != nil {
		t.Errorf("dpkg -r removed the conffile: %v", err)
	}
	run("dpkg", "--purge", "xksproxy")
	for _, path := range []string{"/usr/bin/xksproxy", "/lib/systemd/system/xksproxy.service", "/etc/xksproxy", "/var/lib/xksproxy", "/usr/share/doc/xksproxy"} {
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("purge left %s behind (%v)", path, err)
		}
	}
	for _, db := range []string{"passwd", "group"} {
		if exec.Command("getent", db, "xksproxy").Run() == nil {
			t.Errorf("purge left the xksproxy %s entry", db)
		}
	}
	if exec.Command("dpkg-query", "-W", "xksproxy").Run() == nil {
		t.Error("dpkg still knows the package after purge")
	}
}

func readHealthListen(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "node1", "node.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " = "); ok && k == "health_listen" {
			return strings.Trim(v, `"`)
		}
	}
	t.Fatalf("no health_listen in node1/node.toml:\n%s", b)
	return ""
}

// childPid is the pid of dev under runuser (runuser forks it).
func childPid(t *testing.T, p *process) int {
	t.Helper()
	out, err := exec.Command("pgrep", "-P", strconv.Itoa(p.cmd.Process.Pid)).Output()
	if err != nil {
		t.Fatalf("pgrep: %v", err)
	}
	pid, _ := strconv.Atoi(strings.Fields(string(out))[0])
	return pid
}
