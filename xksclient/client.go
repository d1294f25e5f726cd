package xksclient

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

// Client calls one key store of an XKS proxy.
type Client struct {
	Endpoint string // https://host:port
	URIPath  string // [/prefix]/kms/xks/v1
	Creds    Credentials
	HTTP     *http.Client
	// Now is the signing clock; nil means time.Now.
	Now func() time.Time
}

// NewHTTPClient trusts the PEM CA in caFile (or the system roots when ""),
// optionally presenting a client certificate for mTLS.
func NewHTTPClient(caFile string, clientCert *tls.Certificate) (*http.Client, error) {
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
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: false},
	}, nil
}

// RequestMetadata is the requestMetadata object of every XKS request.
type RequestMetadata struct {
	AWSPrincipalARN string `json:"awsPrincipalArn,omitempty"`
	AWSSourceVPC    string `json:"awsSourceVpc,omitempty"`
	AWSSourceVPCE   string `json:"awsSourceVpce,omitempty"`
	KMSKeyARN       string `json:"kmsKeyArn,omitempty"`
	KMSOperation    string `json:"kmsOperation"`
	KMSRequestID    string `json:"kmsRequestId"`
	KMSViaService   string `json:"kmsViaService,omitempty"`
}

// EncryptRequest is the body of Encrypt.
type EncryptRequest struct {
	RequestMetadata RequestMetadata `json:"requestMetadata"`
	Plaintext       []byte          `json:"plaintext"`
	Algorithm       string          `json:"encryptionAlgorithm"`
	AAD             []byte          `json:"additionalAuthenticatedData,omitempty"`
	CDIVAlgorithm   string          `json:"ciphertextDataIntegrityValueAlgorithm,omitempty"`
}

// EncryptResponse is the body of a successful Encrypt.
type EncryptResponse struct {
	Ciphertext         []byte `json:"ciphertext"`
	CiphertextMetadata []byte `json:"ciphertextMetadata,omitempty"`
	IV                 []byte `json:"initializationVector"`
	Tag                []byte `json:"authenticationTag"`
	CDIV               []byte `json:"ciphertextDataIntegrityValue,omitempty"`
}

// DecryptRequest is the body of Decrypt.
type DecryptRequest struct {
	RequestMetadata    RequestMetadata `json:"requestMetadata"`
	Ciphertext         []byte          `json:"ciphertext"`
	CiphertextMetadata []byte          `json:"ciphertextMetadata,omitempty"`
	Algorithm          string          `json:"encryptionAlgorithm"`
	AAD                []byte          `json:"additionalAuthenticatedData,omitempty"`
	IV                 []byte          `json:"initializationVector"`
	Tag                []byte          `json:"authenticationTag"`
}

// MetadataResponse is the body of a successful GetKeyMetadata.
type MetadataResponse struct {
	KeySpec   string   `json:"keySpec"`
	KeyUsage  []string `json:"keyUsage"`
	KeyStatus string   `json:"keyStatus"`
}

// HealthResponse is the body of a successful GetHealthStatus.
type HealthResponse struct {
	FleetSize int    `json:"xksProxyFleetSize"`
	Vendor    string `json:"xksProxyVendor"`
	Model     string `json:"xksProxyModel"`
	EKMVendor string `json:"ekmVendor"`
	Fleet     []struct {
		ID           string `json:"id"`
		Model        string `json:"model"`
		HealthStatus string `json:"healthStatus"`
	} `json:"ekmFleetDetails"`
}

// Error is a refusal from the proxy.
type Error struct {
	Status  int
	Name    string `json:"errorName"`
	Message string `json:"errorMessage"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Name, e.Message)
}

// KeyPath is the URI path of an operation on a key.
func (c *Client) KeyPath(keyID, op string) string {
	return c.URIPath + "/keys/" + keyID + "/" + op
}

// Post signs and sends body to path and decodes a 200 answer into out; any
// other answer is returned as *Error.
func (c *Client) Post(path string, body []byte, out any) error {
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return err
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	req, err := http.NewRequest(http.MethodPost, c.Endpoint+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	amzDate, auth := c.Creds.Sign(u.Host, path, body, now())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("Authorization", auth)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Status: resp.StatusCode}
		if jerr := json.Unmarshal(data, e); jerr != nil || e.Name == "" {
			return fmt.Errorf("HTTP %d with a body that is not an XKS error: %q", resp.StatusCode, data)
		}
		return e
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func (c *Client) call(path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.Post(path, body, out)
}

// Encrypt calls Encrypt on keyID.
func (c *Client) Encrypt(keyID string, r *EncryptRequest) (*EncryptResponse, error) {
	if r.Algorithm == "" {
		r.Algorithm = "AES_GCM"
	}
	var out EncryptResponse
	if err := c.call(c.KeyPath(keyID, "encrypt"), r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Decrypt calls Decrypt on keyID and returns the plaintext.
func (c *Client) Decrypt(keyID string, r *DecryptRequest) ([]byte, error) {
	if r.Algorithm == "" {
		r.Algorithm = "AES_GCM"
	}
	var out struct {
		Plaintext []byte `json:"plaintext"`
	}
	if err := c.call(c.KeyPath(keyID, "decrypt"), r, &out); err != nil {
		return nil, err
	}
	return out.Plaintext, nil
}

// Metadata calls GetKeyMetadata on keyID.
func (c *Client) Metadata(keyID string, md RequestMetadata) (*MetadataResponse, error) {
	var out MetadataResponse
	body := struct {
		RequestMetadata RequestMetadata `json:"requestMetadata"`
	}{md}
	if err := c.call(c.KeyPath(keyID, "metadata"), body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health calls GetHealthStatus.
func (c *Client) Health(md RequestMetadata) (*HealthResponse, error) {
	var out HealthResponse
	body := struct {
		RequestMetadata RequestMetadata `json:"requestMetadata"`
	}{md}
	if err := c.call(c.URIPath+"/health", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RoundTrip encrypts plaintext with aad under keyID, asking for a CDIV, and
// decrypts the result, failing unless the plaintext comes back unchanged.
func (c *Client) RoundTrip(keyID string, md RequestMetadata, plaintext, aad []byte) error {
	md.KMSOperation = "Encrypt"
	enc, err := c.Encrypt(keyID, &EncryptRequest{RequestMetadata: md, Plaintext: plaintext, AAD: aad, CDIVAlgorithm: "SHA_256"})
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	md.KMSOperation = "Decrypt"
	got, err := c.Decrypt(keyID, &DecryptRequest{
		RequestMetadata: md, Ciphertext: enc.Ciphertext, CiphertextMetadata: enc.CiphertextMetadata,
		AAD: aad, IV: enc.IV, Tag: enc.Tag,
	})
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	if !bytes.Equal(got, plaintext) {
		return fmt.Errorf("decrypt returned different plaintext")
	}
	return nil
}
