package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// maxAnswerBytes bounds an answer read: a backup is the largest (the
// cluster accepts up to 256 MiB).
const maxAnswerBytes = 256 << 20

// Client calls a node's admin API, one typed method per route.
type Client struct {
	BaseURL string // https://host:port
	Token   string
	HTTP    *http.Client
	// Stale reads: the routes that allow it answer from the node's state
	// as it is, without the leader (Route.Stale).
	Stale bool
	// OnFreshness, when set, hears how current the node was for every
	// answer that says so (Route.StatesFreshness).
	OnFreshness func(*Route, Freshness)
}

// Freshness is how current a node was when it answered.
type Freshness struct {
	AppliedIndex     uint64        // the answer holds every change up to this index
	LeaderContactAge time.Duration // since the node last heard from the leader; 0 on the leader
}

// freshnessOf reads an answer's freshness headers; ok is false without them
// (a route that reads no state, or a node of an older build).
func freshnessOf(h http.Header) (f Freshness, ok bool) {
	index, err1 := strconv.ParseUint(h.Get(AppliedIndexHeader), 10, 64)
	age, err2 := strconv.ParseInt(h.Get(LeaderContactAgeHeader), 10, 64)
	if err1 != nil || err2 != nil {
		return Freshness{}, false
	}
	return Freshness{AppliedIndex: index, LeaderContactAge: time.Duration(age) * time.Millisecond}, true
}

// NewClient trusts caFile (the cluster CA) for the admin listener.
func NewClient(baseURL, token, caFile string) (*Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	return &Client{BaseURL: baseURL, Token: token, HTTP: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg},
	}}, nil
}

// call sends in as JSON (nothing when nil) to route and decodes a 2xx answer
// into out.
func call[T any](ctx context.Context, c *Client, r *Route, in any, args ...string) (T, error) {
	var out T
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return out, err
		}
		body = b
	}
	data, err := c.raw(ctx, r, nil, body, args...)
	if err != nil {
		return out, err
	}
	return out, json.Unmarshal(data, &out)
}

// raw sends body as it is and returns a 2xx answer's body as it is.
func (c *Client) raw(ctx context.Context, r *Route, query url.Values, body []byte, args ...string) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	u := c.BaseURL + r.Path(args...)
	if c.Stale && r.Stale {
		query = withStale(query)
	}
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, err
	}
	if f, ok := freshnessOf(resp.Header); ok && c.OnFreshness != nil {
		c.OnFreshness(r, f)
	}
	if resp.StatusCode/100 != 2 {
		var e APIError
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	return data, nil
}

// ListKeyStores lists every key store.
func (c *Client) ListKeyStores(ctx context.Context) ([]KeyStoreInfo, error) {
	return call[[]KeyStoreInfo](ctx, c, ListKeyStores, nil)
}

// CreateKeyStore creates a key store; the answer holds its first credential.
func (c *Client) CreateKeyStore(ctx context.Context, req CreateKeyStoreRequest) (CreateKeyStoreResponse, error) {
	return call[CreateKeyStoreResponse](ctx, c, CreateKeyStore, req)
}

// ShowKeyStore describes key store ks.
func (c *Client) ShowKeyStore(ctx context.Context, ks string) (KeyStoreInfo, error) {
	return call[KeyStoreInfo](ctx, c, ShowKeyStore, nil, ks)
}

// EnableKeyStore enables ks on every node.
func (c *Client) EnableKeyStore(ctx context.Context, ks string) (Change, error) {
	return call[Change](ctx, c, EnableKeyStore, nil, ks)
}

// DisableKeyStore disables ks on every node.
func (c *Client) DisableKeyStore(ctx context.Context, ks string) (Change, error) {
	return call[Change](ctx, c, DisableKeyStore, nil, ks)
}

// ListCredentials lists ks's credentials, without secrets.
func (c *Client) ListCredentials(ctx context.Context, ks string) ([]CredentialInfo, error) {
	return call[[]CredentialInfo](ctx, c, ListCredentials, nil, ks)
}

// AddCredential adds a credential to ks; the answer is the only one that
// holds its secret.
func (c *Client) AddCredential(ctx context.Context, ks string, req AddCredentialRequest) (NewCredential, error) {
	return call[NewCredential](ctx, c, AddCredential, req, ks)
}

// RemoveCredential revokes access key akid of ks on every node.
func (c *Client) RemoveCredential(ctx context.Context, ks, akid string) (Change, error) {
	return call[Change](ctx, c, RemoveCredential, nil, ks, akid)
}

// ListKeys lists ks's keys.
func (c *Client) ListKeys(ctx context.Context, ks string) ([]KeyInfo, error) {
	return call[[]KeyInfo](ctx, c, ListKeys, nil, ks)
}

// CreateKey creates a key in ks.
func (c *Client) CreateKey(ctx context.Context, ks string, req CreateKeyRequest) (KeyInfo, error) {
	return call[KeyInfo](ctx, c, CreateKey, req, ks)
}

// ShowKey describes key id of ks.
func (c *Client) ShowKey(ctx context.Context, ks, id string) (KeyInfo, error) {
	return call[KeyInfo](ctx, c, ShowKey, nil, ks, id)
}

// EnableKey enables a key on every node.
func (c *Client) EnableKey(ctx context.Context, ks, id string) (Change, error) {
	return call[Change](ctx, c, EnableKey, nil, ks, id)
}

// DisableKey disables a key on every node: the kill switch.
func (c *Client) DisableKey(ctx context.Context, ks, id string) (Change, error) {
	return call[Change](ctx, c, DisableKey, nil, ks, id)
}

// RotateKey adds a version to a key and makes it current.
func (c *Client) RotateKey(ctx context.Context, ks, id string) (Change, error) {
	return call[Change](ctx, c, RotateKey, nil, ks, id)
}

// RotateKeyAdopting rotates a key of a shared key store to the HSM object
// labelled hsmLabel, which every node's HSM must already hold.
func (c *Client) RotateKeyAdopting(ctx context.Context, ks, id, hsmLabel string) (Change, error) {
	return call[Change](ctx, c, RotateKey, RotateKeyRequest{HSMLabel: hsmLabel}, ks, id)
}

// CheckHSMLabels says, for each label, which reachable voters' HSMs lack it.
func (c *Client) CheckHSMLabels(ctx context.Context, labels []string) ([]HSMLabelCheck, error) {
	return call[[]HSMLabelCheck](ctx, c, CheckHSMLabels, HSMLabelsRequest{Labels: labels})
}

// ScheduleDeletion deletes a disabled key after days.
func (c *Client) ScheduleDeletion(ctx context.Context, ks, id string, days int) (KeyInfo, error) {
	return call[KeyInfo](ctx, c, ScheduleDeletion, ScheduleDeletionRequest{Days: days}, ks, id)
}

// CancelDeletion cancels a key's scheduled deletion.
func (c *Client) CancelDeletion(ctx context.Context, ks, id string) (KeyInfo, error) {
	return call[KeyInfo](ctx, c, CancelDeletion, nil, ks, id)
}

// ListGrants lists ks's grants.
func (c *Client) ListGrants(ctx context.Context, ks string) ([]GrantInfo, error) {
	return call[[]GrantInfo](ctx, c, ListGrants, nil, ks)
}

// AddGrant adds g to ks; the answer carries its id.
func (c *Client) AddGrant(ctx context.Context, ks string, g GrantInfo) (GrantInfo, error) {
	return call[GrantInfo](ctx, c, AddGrant, g, ks)
}

// RemoveGrant removes grant id of ks on every node.
func (c *Client) RemoveGrant(ctx context.Context, ks, id string) (Change, error) {
	return call[Change](ctx, c, RemoveGrant, nil, ks, id)
}

// ClusterStatus is the leader, the voters and the fleet.
func (c *Client) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	return call[ClusterStatus](ctx, c, GetClusterStatus, nil)
}

// JoinNode admits node id at a cluster address as a voter.
func (c *Client) JoinNode(ctx context.Context, id, address string) error {
	_, err := call[struct{}](ctx, c, JoinNode, MembershipRequest{ID: id, Address: address})
	return err
}

// RemoveNode removes node id from the voters.
func (c *Client) RemoveNode(ctx context.Context, id string) error {
	_, err := call[struct{}](ctx, c, RemoveNode, MembershipRequest{ID: id})
	return err
}

// SaveSnapshot returns a backup file; stale (or c.Stale) takes the node's
// state without a leader's confirmation.
func (c *Client) SaveSnapshot(ctx context.Context, stale bool) ([]byte, error) {
	var q url.Values
	if stale {
		q = withStale(q)
	}
	return c.raw(ctx, SaveSnapshot, q, nil)
}

// withStale adds the stale read parameter to q. It is sent as 1, which
// servers read as true, and which builds before stale reads took for
// snapshot save too.
func withStale(q url.Values) url.Values {
	out := url.Values{StaleParam: {"1"}}
	for k, v := range q {
		out[k] = v
	}
	return out
}

// RestoreSnapshot restores a backup file; allowUnauthenticated also takes
// one without a MAC (never one whose MAC fails).
func (c *Client) RestoreSnapshot(ctx context.Context, file []byte, allowUnauthenticated bool) (Change, error) {
	var q url.Values
	if allowUnauthenticated {
		q = url.Values{"allow-unauthenticated": {"1"}}
	}
	data, err := c.raw(ctx, RestoreSnapshot, q, file)
	if err != nil {
		return Change{}, err
	}
	var res Change
	return res, json.Unmarshal(data, &res)
}

// InspectSnapshot describes a backup file without restoring it.
func (c *Client) InspectSnapshot(ctx context.Context, file []byte) (BackupInfo, error) {
	var info BackupInfo
	data, err := c.raw(ctx, InspectSnapshot, nil, file)
	if err != nil {
		return info, err
	}
	return info, json.Unmarshal(data, &info)
}

// Profile returns a Go runtime profile of the node (see Profile's Summary);
// query takes pprof's parameters (seconds, debug).
func (c *Client) Profile(ctx context.Context, name string, query url.Values) ([]byte, error) {
	return c.raw(ctx, Profile, query, nil, name)
}

// OpenAPIDocument returns the node's OpenAPI document of this API.
func (c *Client) OpenAPIDocument(ctx context.Context) ([]byte, error) {
	return c.raw(ctx, OpenAPI, nil, nil)
}
