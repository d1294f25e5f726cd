// Package devenv prepares and remembers a development proxy in one
// directory: a SoftHSMv2 token, a CA and certificate, a demo key store with a
// credential and a key, the node's TOML file, and the client files that
// scripts and the bench harness read.
package devenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/xksproxy/xksproxy/bench/xksclient"
	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/node"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
)

// DefaultListen is where the XKS API of `xksproxy dev` listens by default.
const DefaultListen = "127.0.0.1:8443"

// State is what dev chooses once and reuses on every later run, so nothing
// is regenerated and nothing is lost.
type State struct {
	Listen       string `json:"listen"`
	HealthListen string `json:"healthListen"`
	Region       string `json:"region"`
	KeyStore     string `json:"keyStore"`
	URIPath      string `json:"uriPath"`
	AccessKeyID  string `json:"accessKeyId"`
	KeyID        string `json:"keyId"`
	HSMLabel     string `json:"hsmLabel"`
	TokenLabel   string `json:"tokenLabel"`
}

// Env is a prepared development directory.
type Env struct {
	Dir    string
	State  State
	secret string
}

// ClientFile is DIR/client.json, the contract with scripts, tests and the
// bench harness. Fields are only ever added.
type ClientFile struct {
	Endpoint        string   `json:"endpoint"`
	Endpoints       []string `json:"endpoints"`
	URIPath         string   `json:"uriPath"`
	KeyStore        string   `json:"keyStore"`
	AccessKeyID     string   `json:"accessKeyId"`
	SecretAccessKey string   `json:"secretAccessKey"`
	Region          string   `json:"region"`
	KeyID           string   `json:"keyId"`
	CACertFile      string   `json:"caCertFile"`
	HealthEndpoint  string   `json:"healthEndpoint"`
}

// KMSConsoleFile is the AWS KMS console's proxy configuration file.
type KMSConsoleFile struct {
	XksProxyURIPath string `json:"XksProxyUriPath"`
	Credential      struct {
		AccessKeyID        string `json:"AccessKeyId"`
		RawSecretAccessKey string `json:"RawSecretAccessKey"`
	} `json:"XksProxyAuthenticationCredential"`
}

func (e *Env) path(parts ...string) string {
	return filepath.Join(append([]string{e.Dir}, parts...)...)
}

// Prepare loads DIR's state or creates it. listen overrides the saved
// address when not empty.
func Prepare(dir, listen string) (*Env, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: abs}
	if err := os.MkdirAll(e.path("secrets"), 0o700); err != nil {
		return nil, err
	}
	if err := e.loadOrCreateState(listen); err != nil {
		return nil, err
	}
	if err := e.prepareHSM(); err != nil {
		return nil, err
	}
	ca, err := LoadOrCreateCA(e.path("tls"), "xksproxy dev CA")
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	if err := ca.Issue(e.path("tls", "server.pem"), e.path("tls", "server-key.pem"), "localhost",
		[]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}); err != nil {
		return nil, fmt.Errorf("dev server certificate: %w", err)
	}
	return e, e.writeNodeConfig()
}

func (e *Env) loadOrCreateState(listen string) error {
	statePath := e.path("dev.json")
	if b, err := os.ReadFile(statePath); err == nil {
		if err := json.Unmarshal(b, &e.State); err != nil {
			return fmt.Errorf("%s: %w", statePath, err)
		}
		secret, err := os.ReadFile(e.path("secrets", "credential"))
		if err != nil {
			return fmt.Errorf("dev credential secret: %w", err)
		}
		e.secret = strings.TrimSpace(string(secret))
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	} else {
		cred := fsm.GenerateCredential()
		e.State = State{
			Listen: DefaultListen, Region: "us-east-1", KeyStore: "demo", URIPath: "/demo/kms/xks/v1",
			AccessKeyID: cred.AccessKeyID, KeyID: "demo-key", HSMLabel: "demo-key-v1", TokenLabel: "xksproxy-dev",
		}
		e.secret = string(cred.Secret)
		for name, value := range map[string]string{
			"credential": e.secret, "hsm-pin": randomPIN(), "hsm-so-pin": randomPIN(),
		} {
			if err := writeFileAtomic(e.path("secrets", name), []byte(value+"\n"), 0o600); err != nil {
				return err
			}
		}
	}
	if listen != "" {
		e.State.Listen = listen
	}
	apiPort, err := portOf(e.State.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", e.State.Listen, err)
	}
	if hp, err := portOf(e.State.HealthListen); err != nil || hp >= apiPort && hp <= apiPort+9 {
		if e.State.HealthListen, err = freePortOutside(apiPort, apiPort+9); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(e.State, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(statePath, append(b, '\n'), 0o600)
}

func randomPIN() string {
	return string(fsm.GenerateCredential().Secret[:16])
}

func portOf(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// freePortOutside asks the kernel for a free loopback port outside lo..hi,
// the range other tools expect to own next to the API port.
func freePortOutside(lo, hi int) (string, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		ln.Close()
		if p, _ := portOf(addr); p < lo || p > hi {
			return addr, nil
		}
	}
	return "", errors.New("no free loopback port outside the reserved range")
}

func (e *Env) prepareHSM() error {
	conf, err := softhsm.WriteConfig(e.Dir)
	if err != nil {
		return fmt.Errorf("SoftHSMv2 configuration: %w", err)
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	module, err := softhsm.ModulePath()
	if err != nil {
		return err
	}
	pin, err := e.readSecret("hsm-pin")
	if err != nil {
		return err
	}
	soPIN, err := e.readSecret("hsm-so-pin")
	if err != nil {
		return err
	}
	return softhsm.InitToken(module, e.State.TokenLabel, soPIN, pin)
}

func (e *Env) readSecret(name string) (string, error) {
	b, err := os.ReadFile(e.path("secrets", name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// NodeConfig is the single node's configuration, also written to DIR/node.toml
// so that `xksproxy serve --config DIR/node.toml` runs the same node.
func (e *Env) NodeConfig() (*node.Config, error) {
	module, err := softhsm.ModulePath()
	if err != nil {
		return nil, err
	}
	c := &node.Config{
		DataDir: e.Dir,
		NodeID:  "dev-node-1",
		API: node.APIConfig{
			Listen:       e.State.Listen,
			HealthListen: e.State.HealthListen,
			TLSCertFile:  e.path("tls", "server.pem"),
			TLSKeyFile:   e.path("tls", "server-key.pem"),
		},
		HSM: node.HSMConfig{
			Module:     module,
			TokenLabel: e.State.TokenLabel,
			PINFile:    e.path("secrets", "hsm-pin"),
			Env:        map[string]string{"SOFTHSM2_CONF": e.path("softhsm2.conf")},
		},
		Log: node.LogConfig{Level: "info", Format: "json"},
		Bootstrap: node.BootstrapConfig{
			KeyStores: []node.BootstrapKeyStore{{
				Name: e.State.KeyStore, URIPath: e.State.URIPath, Region: e.State.Region,
				Credentials: []node.BootstrapCredential{{AccessKeyID: e.State.AccessKeyID, SecretFile: e.path("secrets", "credential")}},
			}},
			Keys: []node.BootstrapKey{{
				KeyStore: e.State.KeyStore, ID: e.State.KeyID, HSMLabel: e.State.HSMLabel,
				Usage: []string{"ENCRYPT", "DECRYPT"}, Create: true,
			}},
		},
	}
	c.Defaults()
	return c, c.Validate()
}

func (e *Env) writeNodeConfig() error {
	c, err := e.NodeConfig()
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# Written by `xksproxy dev`; run the same node with `xksproxy serve --config " + e.path("node.toml") + "`.\n")
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return err
	}
	return writeFileAtomic(e.path("node.toml"), []byte(b.String()), 0o600)
}

// Client returns an XKS client for the demo key store.
func (e *Env) Client() (*xksclient.Client, error) {
	httpClient, err := xksclient.NewHTTPClient(e.path("tls", "ca.pem"), nil)
	if err != nil {
		return nil, err
	}
	return &xksclient.Client{
		Endpoint: e.Endpoint(),
		URIPath:  e.State.URIPath,
		Creds:    xksclient.Credentials{AccessKeyID: e.State.AccessKeyID, Secret: e.secret, Region: e.State.Region},
		HTTP:     httpClient,
	}, nil
}

// Endpoint is the https URL of the XKS API.
func (e *Env) Endpoint() string { return "https://" + e.State.Listen }

// Verify proves the node serves: a real encrypt (with CDIV) and decrypt of the
// demo key through HTTPS and SigV4.
func (e *Env) Verify() error {
	c, err := e.Client()
	if err != nil {
		return err
	}
	md := xksclient.RequestMetadata{
		AWSPrincipalARN: "arn:aws:iam::111122223333:role/xksproxy-dev-self-check",
		KMSKeyARN:       "arn:aws:kms:" + e.State.Region + ":111122223333:key/xksproxy-dev-self-check",
		KMSRequestID:    "xksproxy-dev-self-check",
	}
	return c.RoundTrip(e.State.KeyID, md, []byte("xksproxy dev self-check"), []byte("dev"))
}

// WriteClientFiles writes DIR/kms-console.json and then DIR/client.json, each
// atomically; client.json last, since tools wait for it as the ready signal.
func (e *Env) WriteClientFiles() error {
	var console KMSConsoleFile
	console.XksProxyURIPath = e.State.URIPath
	console.Credential.AccessKeyID = e.State.AccessKeyID
	console.Credential.RawSecretAccessKey = e.secret
	if err := writeJSON(e.path("kms-console.json"), console); err != nil {
		return err
	}
	return writeJSON(e.path("client.json"), ClientFile{
		Endpoint:        e.Endpoint(),
		Endpoints:       []string{e.Endpoint()},
		URIPath:         e.State.URIPath,
		KeyStore:        e.State.KeyStore,
		AccessKeyID:     e.State.AccessKeyID,
		SecretAccessKey: e.secret,
		Region:          e.State.Region,
		KeyID:           e.State.KeyID,
		CACertFile:      e.path("tls", "ca.pem"),
		HealthEndpoint:  "http://" + e.State.HealthListen,
	})
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), 0o600)
}

// PrintWelcome tells a newcomer what is running and how to call it.
func (e *Env) PrintWelcome(w io.Writer) {
	body := `{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::111122223333:user/alice","kmsKeyArn":"arn:aws:kms:` +
		e.State.Region + `:111122223333:key/demo","kmsOperation":"Encrypt","kmsRequestId":"demo-1"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"}`
	fmt.Fprintf(w, `
xksproxy dev is serving the XKS API on %s
  key store  %s  (URI path %s, region %s)
  key        %s
  client     %s
  AWS KMS console file  %s
  health     %s/ping  %s/ready

Encrypt "Hello World!" with the demo key:

curl --cacert %s \
  --aws-sigv4 "aws:amz:%s:kms-xks-proxy" --user '%s:%s' \
  -H 'Content-Type: application/json' \
  -d '%s' \
  %s%s/keys/%s/encrypt

Stop with Ctrl-C; run again to resume with the same token, key and credentials.
`, e.Endpoint(), e.State.KeyStore, e.State.URIPath, e.State.Region, e.State.KeyID,
		e.path("client.json"), e.path("kms-console.json"),
		"http://"+e.State.HealthListen, "http://"+e.State.HealthListen,
		e.path("tls", "ca.pem"), e.State.Region, e.State.AccessKeyID, e.secret, body,
		e.Endpoint(), e.State.URIPath, e.State.KeyID)
}
