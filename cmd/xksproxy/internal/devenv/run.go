package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/internal/atomicfile"
	"github.com/xksproxy/xksproxy/xksclient"
)

// KMSConsoleFile is the AWS KMS console's proxy configuration file.
type KMSConsoleFile = admin.KMSConsoleFile

// Supervisor runs one `xksproxy serve` process per node. It never restarts
// a node that dies: tests kill nodes on purpose.
type Supervisor struct {
	env   *Env
	procs []*exec.Cmd
	exits chan int
}

// Start launches every node from DIR/nodeN/node.toml with the binary at
// bin, sending their logs to logs.
func (e *Env) Start(bin string, logs io.Writer) (*Supervisor, error) {
	s := &Supervisor{env: e, exits: make(chan int, len(e.State.Nodes))}
	for i := range e.State.Nodes {
		if err := e.stageClusterKeys(i); err != nil {
			s.Stop(5 * time.Second)
			return nil, fmt.Errorf("%s: staging the cluster key material: %w", e.State.Nodes[i].ID, err)
		}
		cmd := exec.Command(bin, "serve", "--config", e.nodeDir(i, "node.toml"))
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			s.Stop(5 * time.Second)
			return nil, fmt.Errorf("starting %s: %w", e.State.Nodes[i].ID, err)
		}
		s.procs = append(s.procs, cmd)
		if err := atomicfile.WriteFile(e.nodeDir(i, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			return nil, err
		}
		go func() {
			cmd.Wait()
			s.exits <- i
		}()
	}
	return s, nil
}

// Exits delivers the index of each node whose process ended.
func (s *Supervisor) Exits() <-chan int { return s.exits }

// Stop sends SIGTERM to every node still running and kills what has not
// exited after grace.
func (s *Supervisor) Stop(grace time.Duration) {
	for _, p := range s.procs {
		p.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for _, p := range s.procs {
		for p.ProcessState == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if p.ProcessState == nil {
			p.Process.Kill()
		}
	}
}

// WaitReady waits until every node reports ready, they agree on one leader
// with every node a voter, and the demo key round-trips through each node.
func (e *Env) WaitReady(ctx context.Context, exited func() bool) error {
	client, err := e.AdminClient(0)
	if err != nil {
		return err
	}
	var last error
	for {
		if last = e.checkReady(ctx, client); last == nil {
			return nil
		}
		if exited() {
			return fmt.Errorf("a node exited before the cluster was ready (last check: %v)", last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the cluster did not become ready: %w", last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (e *Env) checkReady(ctx context.Context, client *admin.Client) error {
	for _, n := range e.State.Nodes {
		resp, err := http.Get("http://" + n.HealthListen + "/ready")
		if err != nil {
			return fmt.Errorf("%s: %w", n.ID, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s is not ready", n.ID)
		}
	}
	st, err := client.ClusterStatus(ctx)
	if err != nil {
		return err
	}
	if st.Leader == nil || len(st.Nodes) != len(e.State.Nodes) {
		return fmt.Errorf("cluster has %d of %d nodes and leader %v", len(st.Nodes), len(e.State.Nodes), st.Leader)
	}
	e.skipped = e.skipped[:0]
	for i := range e.State.Nodes {
		err := e.Verify(i)
		if e.resumed && changedByUser(err) {
			e.skipped = append(e.skipped, fmt.Sprintf("%s: %v", e.State.Nodes[i].ID, err))
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", e.State.Nodes[i].ID, err)
		}
	}
	return nil
}

// changedByUser tells the answers a ready node gives when the demo key
// store was changed on purpose since dev made it (the README's operations
// do exactly that): the key disabled or gone, dev's credential removed,
// the grants or the store changed.
func changedByUser(err error) bool {
	var x *xksclient.Error
	if !errors.As(err, &x) {
		return false
	}
	switch x.Name {
	case "AuthenticationFailedException", "InvalidStateException", "KeyNotFoundException",
		"AccessDeniedException", "InvalidURIPathException":
		return true
	}
	return false
}

// AdminClient returns an admin API client for node i.
func (e *Env) AdminClient(i int) (*admin.Client, error) {
	token, err := e.readSecret("admin-token")
	if err != nil {
		return nil, err
	}
	return admin.NewClient("https://"+e.State.Nodes[i].AdminListen, token, e.path("tls", "ca.pem"))
}

// Endpoint is node i's XKS API URL.
func (e *Env) Endpoint(i int) string { return "https://" + e.State.Nodes[i].Listen }

// clientFile is what DIR/client.json says: the demo key store through every
// node.
func (e *Env) clientFile() xksclient.ClientFile {
	cf := xksclient.ClientFile{
		URIPath: e.State.URIPath, KeyStore: e.State.KeyStore, AccessKeyID: e.State.AccessKeyID,
		SecretAccessKey: e.secret, Region: e.State.Region, KeyID: e.State.KeyID, CACertFile: e.path("tls", "ca.pem"),
	}
	for i, n := range e.State.Nodes {
		cf.Endpoints = append(cf.Endpoints, e.Endpoint(i))
		cf.HealthEndpoints = append(cf.HealthEndpoints, "http://"+n.HealthListen)
	}
	cf.Endpoint = cf.Endpoints[0]
	return cf
}

// Verify proves node i serves: a real encrypt (with CDIV) and decrypt of the
// demo key through HTTPS and SigV4.
func (e *Env) Verify(i int) error {
	c, err := e.clientFile().Client(i)
	if err != nil {
		return err
	}
	defer c.HTTP.CloseIdleConnections()
	md := xksclient.RequestMetadata{
		AWSPrincipalARN: "arn:aws:iam::111122223333:role/xksproxy-dev-self-check",
		KMSKeyARN:       "arn:aws:kms:" + e.State.Region + ":111122223333:key/xksproxy-dev-self-check",
		KMSRequestID:    "xksproxy-dev-self-check",
	}
	return c.RoundTrip(e.State.KeyID, md, []byte("xksproxy dev self-check"), []byte("dev"))
}

// WriteClientFiles writes DIR/nodeN/admin.env, DIR/kms-console.json and
// then DIR/client.json, each atomically; client.json last, since tools wait
// for it as the ready signal.
func (e *Env) WriteClientFiles() error {
	for i, n := range e.State.Nodes {
		// The token stays in its file: the environment names the file.
		env := fmt.Sprintf("# Source this to point the xksproxy CLI at %s's admin API.\nexport XKSPROXY_ADMIN=https://%s\nexport XKSPROXY_ADMIN_TOKEN_FILE=%s\nexport XKSPROXY_ADMIN_CA=%s\n",
			n.ID, n.AdminListen, e.path("secrets", "admin-token"), e.path("tls", "ca.pem"))
		if err := atomicfile.WriteFile(e.nodeDir(i, "admin.env"), []byte(env), 0o600); err != nil {
			return err
		}
	}
	var console KMSConsoleFile
	console.XksProxyURIPath = e.State.URIPath
	console.Credential.AccessKeyID = e.State.AccessKeyID
	console.Credential.RawSecretAccessKey = e.secret
	if err := writeJSON(e.path("kms-console.json"), console); err != nil {
		return err
	}
	return e.clientFile().Save(e.path("client.json"))
}

// RemoveClientFile deletes a stale client.json before the nodes start, so
// that its appearance always means this run is ready.
func (e *Env) RemoveClientFile() error {
	err := os.Remove(e.path("client.json"))
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

func writeJSON(path string, v any) error {
	b, err := jsonIndent(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

// PrintWelcome tells a newcomer what is running and how to call it. The
// curl command reads the SigV4 secret from its file, so that the secret
// never lands on the terminal, in its scroll-back or in a recording.
func (e *Env) PrintWelcome(w io.Writer) {
	body := `{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::111122223333:user/alice","kmsKeyArn":"arn:aws:kms:` +
		e.State.Region + `:111122223333:key/demo","kmsOperation":"Encrypt","kmsRequestId":"demo-1"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"}`
	fmt.Fprintf(w, "\nxksproxy dev is serving the XKS API with %d node(s):\n", len(e.State.Nodes))
	for i, n := range e.State.Nodes {
		fmt.Fprintf(w, "  %-6s %s   health http://%s/ready   admin: source %s\n", n.ID, e.Endpoint(i), n.HealthListen, e.nodeDir(i, "admin.env"))
	}
	fmt.Fprintf(w, `  key store  %s  (URI path %s, region %s, grants open)
  key        %s
  client     %s
  AWS KMS console file  %s

Encrypt "Hello World!" with the demo key:

curl --cacert %s \
  --aws-sigv4 "aws:amz:%s:kms-xks-proxy" --user "%s:$(cat '%s')" \
  -H 'Content-Type: application/json' \
  -d '%s' \
  %s%s/keys/%s/encrypt

Manage it:  source %s && %s key list %s
Stop with Ctrl-C; run again to resume with the same tokens, keys and credentials.
`, e.State.KeyStore, e.State.URIPath, e.State.Region, e.State.KeyID,
		e.path("client.json"), e.path("kms-console.json"),
		e.path("tls", "ca.pem"), e.State.Region, e.State.AccessKeyID, e.path("secrets", "credential"), body,
		e.Endpoint(0), e.State.URIPath, e.State.KeyID,
		e.nodeDir(0, "admin.env"), cliCommand(), e.State.KeyStore)
	if len(e.skipped) > 0 {
		fmt.Fprintf(w, "\nThe demo key store was changed since dev made it, so the round trip above may fail\nand dev did not check it (client.json holds dev's own credential):\n")
		for _, s := range e.skipped {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
}

// cliCommand is how the user who started dev runs the CLI: the binary they
// ran, or under `go run`, whose binary is deleted when it exits, go run
// again.
func cliCommand() string {
	if strings.Contains(os.Args[0], string(filepath.Separator)+"go-build") {
		return "go run ./cmd/xksproxy"
	}
	return os.Args[0]
}
