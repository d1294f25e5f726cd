package xksclient

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/xksproxy/xksproxy/internal/atomicfile"
)

// ClientFile is client.json, which `xksproxy dev` writes last, once every
// node is ready (see the README's "dev and the files it writes"): how to
// reach the proxy and sign for its demo key store. Scripts and tools outside
// this repository read it, so it is a contract: fields are only ever added,
// and no field's JSON name or encoding changes (testdata holds a file
// written before this type existed, and a test decodes and rewrites it).
type ClientFile struct {
	Endpoint        string   `json:"endpoint"`  // = Endpoints[0]
	Endpoints       []string `json:"endpoints"` // https://host:port, node 1 first
	URIPath         string   `json:"uriPath"`   // [/prefix]/kms/xks/v1
	KeyStore        string   `json:"keyStore"`
	AccessKeyID     string   `json:"accessKeyId"`
	SecretAccessKey string   `json:"secretAccessKey"`
	Region          string   `json:"region"`
	KeyID           string   `json:"keyId"`
	CACertFile      string   `json:"caCertFile"`      // absolute path of the endpoints' PEM CA
	HealthEndpoints []string `json:"healthEndpoints"` // http://host:port of /ping and /ready, node 1 first
}

// LoadClientFile reads a client.json.
func LoadClientFile(path string) (ClientFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ClientFile{}, err
	}
	var f ClientFile
	if err := json.Unmarshal(data, &f); err != nil {
		return ClientFile{}, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Save writes f to path in one rename, so that a tool waiting for the file
// never reads half of it, readable by its owner only: it holds a secret.
func (f ClientFile) Save(path string) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// Client returns a client of endpoint node (from 0) that trusts CACertFile
// and signs with the file's credential.
func (f ClientFile) Client(node int) (*Client, error) {
	if node < 0 || node >= len(f.Endpoints) {
		return nil, fmt.Errorf("client.json names %d endpoints, not %d", len(f.Endpoints), node+1)
	}
	hc, err := NewHTTPClient(f.CACertFile, nil)
	if err != nil {
		return nil, err
	}
	return &Client{Endpoint: f.Endpoints[node], URIPath: f.URIPath, HTTP: hc,
		Creds: Credentials{AccessKeyID: f.AccessKeyID, Secret: f.SecretAccessKey, Region: f.Region}}, nil
}
