package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/xksproxy/xksproxy/xksclient"
)

// Secret is a SigV4 secret access key. It prints and marshals as a
// placeholder, so that no format verb, log line or report can leak it; only
// Reveal gives the value, to the signer.
type Secret string

// Redacted is what a Secret prints as.
const Redacted = "[redacted]"

func (Secret) String() string   { return Redacted }
func (Secret) GoString() string { return Redacted }

// MarshalJSON keeps a Secret out of every JSON document.
func (Secret) MarshalJSON() ([]byte, error) { return json.Marshal(Redacted) }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// Target is the key store under load: where it listens, how to sign for it,
// and which keys to use.
type Target struct {
	Endpoints   []string // https://host:port, one per node
	URIPath     string   // [/prefix]/kms/xks/v1
	KeyStore    string   // informational: the key store's name
	Region      string
	AccessKeyID string
	Secret      Secret
	CAFile      string   // PEM CA of the endpoints' certificates; "" for the system roots
	KeyIDs      []string // external key ids
}

// LoadClientFile reads the target from a client.json written by `xksproxy
// dev`.
func LoadClientFile(path string) (Target, error) {
	cf, err := xksclient.LoadClientFile(path)
	if err != nil {
		return Target{}, err
	}
	t := Target{
		Endpoints: cf.Endpoints, URIPath: cf.URIPath, KeyStore: cf.KeyStore, Region: cf.Region,
		AccessKeyID: cf.AccessKeyID, Secret: Secret(cf.SecretAccessKey), CAFile: cf.CACertFile,
	}
	if len(t.Endpoints) == 0 && cf.Endpoint != "" {
		t.Endpoints = []string{cf.Endpoint}
	}
	if cf.KeyID != "" {
		t.KeyIDs = []string{cf.KeyID}
	}
	return t, nil
}

// Validate reports the first thing that makes t unusable.
func (t Target) Validate() error {
	if len(t.Endpoints) == 0 {
		return errors.New("no endpoint: pass --client or --endpoint")
	}
	for _, e := range t.Endpoints {
		u, err := url.Parse(e)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("endpoint %q is not https://host[:port]", e)
		}
	}
	if !strings.HasSuffix(t.URIPath, "/kms/xks/v1") {
		return fmt.Errorf("URI path %q does not end in /kms/xks/v1", t.URIPath)
	}
	if t.AccessKeyID == "" || t.Secret == "" {
		return errors.New("no SigV4 credential: pass --client, or --access-key-id with --secret-file or $XKSBENCH_SECRET")
	}
	if t.Region == "" {
		return errors.New("no region")
	}
	if len(t.KeyIDs) == 0 {
		return errors.New("no key id: pass --key")
	}
	return nil
}
