package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/xksproxy/xksproxy/bench/xksclient"
)

// sample is one successful encrypt, kept so that a later decrypt can prove
// the round trip.
type sample struct {
	plaintext, aad []byte
	enc            xksclient.EncryptResponse
}

// ring keeps a key's most recent encrypts. Decrypts draw from it at random,
// so they use ciphertexts this run produced, old and new, possibly on other
// nodes than the one that encrypted them.
type ring struct {
	mu    sync.Mutex
	items []sample
	next  int
	size  int
}

func newRing(size int) *ring { return &ring{size: size} }

func (r *ring) put(s sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.items) < r.size {
		r.items = append(r.items, s)
		return
	}
	r.items[r.next] = s
	r.next = (r.next + 1) % r.size
}

func (r *ring) pick() (sample, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.items) == 0 {
		return sample{}, false
	}
	return r.items[rand.IntN(len(r.items))], true
}

// keyState is one logical key: its external key id, its ciphertexts and its
// place in the mix.
type keyState struct {
	name, id string
	ring     *ring
	picker   opPicker
}

// kmsOperation is the requestMetadata.kmsOperation AWS KMS sends for each
// of our operations.
var kmsOperation = [numOps]string{"Encrypt", "Decrypt", "DescribeKey", "KmsHealthCheck"}

func randomBytes(n int) []byte {
	if n == 0 {
		return nil
	}
	b := make([]byte, (n+7)/8*8)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rand.Uint64())
	}
	return b[:n]
}

// caller sends the operations of one run configuration.
type caller struct {
	creds        xksclient.Credentials
	uriPath      string
	principal    string
	keyARNPrefix string // the kmsKeyArn sent is this plus the key id
	plaintextN   int
	aadN         int
	cdiv         bool
}

func (c *caller) metadata(op Op, keyID, requestID string) xksclient.RequestMetadata {
	md := xksclient.RequestMetadata{KMSOperation: kmsOperation[op], KMSRequestID: requestID}
	if op != OpHealth {
		md.AWSPrincipalARN = c.principal
	}
	if op == OpEncrypt || op == OpDecrypt {
		md.KMSKeyARN = c.keyARNPrefix + keyID
	}
	return md
}

// execute sends one operation on key ks to ep and checks the answer.
func (c *caller) execute(ctx context.Context, ep *endpoint, ks *keyState, op Op, requestID string) failure {
	md := c.metadata(op, ks.id, requestID)
	keyPath := c.uriPath + "/keys/" + ks.id + "/"
	switch op {
	case OpEncrypt:
		pt, aad := randomBytes(c.plaintextN), randomBytes(c.aadN)
		req := xksclient.EncryptRequest{RequestMetadata: md, Plaintext: pt, AAD: aad, Algorithm: "AES_GCM"}
		if c.cdiv {
			req.CDIVAlgorithm = "SHA_256"
		}
		var enc xksclient.EncryptResponse
		if f := c.call(ctx, ep, keyPath+"encrypt", req, &enc); !f.ok() {
			return f
		}
		if f := checkEncrypt(&enc, pt, aad, c.cdiv); !f.ok() {
			return f
		}
		ks.ring.put(sample{plaintext: pt, aad: aad, enc: enc})
	case OpDecrypt:
		s, ok := ks.ring.pick()
		if !ok {
			return failure{kind: kindClient, name: errNoCiphertext, message: "no encrypt of this key had succeeded yet"}
		}
		req := xksclient.DecryptRequest{RequestMetadata: md, Ciphertext: s.enc.Ciphertext, CiphertextMetadata: s.enc.CiphertextMetadata,
			Algorithm: "AES_GCM", AAD: s.aad, IV: s.enc.IV, Tag: s.enc.Tag}
		var out struct {
			Plaintext []byte `json:"plaintext"`
		}
		if f := c.call(ctx, ep, keyPath+"decrypt", req, &out); !f.ok() {
			return f
		}
		if !bytes.Equal(out.Plaintext, s.plaintext) {
			// Never the bytes themselves: they are plaintext.
			return failure{kind: kindClient, name: errWrongPlaintext,
				message: fmt.Sprintf("decrypt answered %d bytes that are not the %d bytes encrypted", len(out.Plaintext), len(s.plaintext))}
		}
	case OpMetadata:
		var out xksclient.MetadataResponse
		if f := c.call(ctx, ep, keyPath+"metadata", struct {
			RequestMetadata xksclient.RequestMetadata `json:"requestMetadata"`
		}{md}, &out); !f.ok() {
			return f
		}
		if out.KeySpec != "AES_256" || (out.KeyStatus != "ENABLED" && out.KeyStatus != "DISABLED") {
			return failure{kind: kindClient, name: errBadResponse, message: clip(fmt.Sprintf("metadata keySpec %q keyStatus %q", out.KeySpec, out.KeyStatus))}
		}
	case OpHealth:
		var out xksclient.HealthResponse
		if f := c.call(ctx, ep, c.uriPath+"/health", struct {
			RequestMetadata xksclient.RequestMetadata `json:"requestMetadata"`
		}{md}, &out); !f.ok() {
			return f
		}
		if out.FleetSize < 1 || len(out.Fleet) < 1 || len(out.Fleet) > 10 {
			return failure{kind: kindClient, name: errBadResponse, message: fmt.Sprintf("health xksProxyFleetSize %d with %d ekmFleetDetails", out.FleetSize, len(out.Fleet))}
		}
	}
	return failure{}
}

// call posts in as JSON and decodes a 200 answer into out.
func (c *caller) call(ctx context.Context, ep *endpoint, path string, in, out any) failure {
	body, err := json.Marshal(in)
	if err != nil {
		return failure{kind: kindClient, name: "encode", message: clip(err.Error())}
	}
	status, data, err := ep.post(ctx, c.creds, path, body)
	if err != nil {
		return classifyTransport(err)
	}
	if status != 200 {
		var e struct {
			Name    string `json:"errorName"`
			Message string `json:"errorMessage"`
		}
		if json.Unmarshal(data, &e) != nil || e.Name == "" {
			return failure{kind: kindHTTP, status: status, name: "(no XKS error body)", message: clip(strings.TrimSpace(string(data)))}
		}
		return failure{kind: kindHTTP, status: status, name: clip(e.Name), message: clip(e.Message)}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return failure{kind: kindClient, name: errBadResponse, message: clip(err.Error())}
	}
	return failure{}
}

// checkEncrypt verifies an Encrypt answer's shape and, when asked for, its
// CDIV, computed here independently of the proxy.
func checkEncrypt(enc *xksclient.EncryptResponse, pt, aad []byte, cdiv bool) failure {
	bad := func(format string, args ...any) failure {
		return failure{kind: kindClient, name: errBadResponse, message: fmt.Sprintf(format, args...)}
	}
	switch {
	case len(enc.Ciphertext) != len(pt):
		return bad("ciphertext of %d bytes for %d bytes of plaintext", len(enc.Ciphertext), len(pt))
	case len(enc.IV) != 12 && len(enc.IV) != 16:
		return bad("initializationVector of %d bytes", len(enc.IV))
	case len(enc.Tag) != 16:
		return bad("authenticationTag of %d bytes", len(enc.Tag))
	case len(enc.CiphertextMetadata) > 20:
		return bad("ciphertextMetadata of %d bytes", len(enc.CiphertextMetadata))
	}
	if cdiv {
		want := xksclient.CDIV(aad, enc.CiphertextMetadata, enc.IV, enc.Ciphertext, enc.Tag)
		if len(enc.CDIV) == 0 {
			return failure{kind: kindClient, name: errWrongCDIV, message: "no ciphertextDataIntegrityValue although SHA_256 was asked for"}
		}
		if !bytes.Equal(enc.CDIV, want) {
			return failure{kind: kindClient, name: errWrongCDIV, message: "ciphertextDataIntegrityValue is not SHA-256(aad||metadata||iv||ciphertext||tag)"}
		}
	}
	return failure{}
}
