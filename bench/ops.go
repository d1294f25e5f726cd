package bench

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/xksclient"
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

// keyState is one logical key: its external key id, its ciphertexts, its
// place in the mix, and what every request on it starts with.
type keyState struct {
	name, id string
	ring     *ring
	picker   opPicker
	paths    [numOps]string // URI path of each operation
	heads    [numOps][]byte // start of each operation's body, see requestHead
}

// kmsOperation is the requestMetadata.kmsOperation AWS KMS sends for each
// of our operations.
var kmsOperation = [numOps]string{"Encrypt", "Decrypt", "DescribeKey", "KmsHealthCheck"}

// randomBytes returns fresh random plaintext and AAD of n and m bytes (nil
// when m is 0), in one allocation.
func randomBytes(n, m int) (pt, aad []byte) {
	b := make([]byte, (n+m+7)/8*8)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rand.Uint64())
	}
	if m > 0 {
		aad = b[n : n+m : n+m]
	}
	return b[:n:n], aad
}

// caller prepares the operations of one run configuration and checks
// their answers.
type caller struct {
	signer       *xksclient.Signer
	uriPath      string
	principal    string
	keyARNPrefix string // the kmsKeyArn sent is this plus the key id
	plaintextN   int
	aadN         int
	cdiv         bool
	bodies       sync.Pool // *[]byte request bodies
}

func newCaller(cfg Config) *caller {
	t := cfg.Target
	return &caller{
		signer:    xksclient.NewSigner(xksclient.Credentials{AccessKeyID: t.AccessKeyID, Secret: t.Secret.Reveal(), Region: t.Region}),
		uriPath:   t.URIPath,
		principal: cfg.Principal, keyARNPrefix: "arn:aws:kms:" + t.Region + ":" + account(cfg.Principal) + ":key/",
		plaintextN: cfg.PlaintextBytes, aadN: cfg.AADBytes, cdiv: cfg.CDIV,
		bodies: sync.Pool{New: func() any { return new([]byte) }},
	}
}

// newKey is the state of a logical key on key id id.
func (c *caller) newKey(name, id string, ringSize int, mix Mix) *keyState {
	ks := &keyState{name: name, id: id, ring: newRing(ringSize), picker: opPicker{mix: mix}}
	for _, op := range Ops() {
		ks.paths[op] = c.uriPath + "/keys/" + id + "/" + op.String()
		ks.heads[op] = requestHead(op, c.principal, c.keyARNPrefix+id)
	}
	// GetHealthStatus is the key store's, not a key's.
	ks.paths[OpHealth] = c.uriPath + "/health"
	return ks
}

// prepare makes x the request of operation op on key ks to ep, signed now;
// a decrypt before any encrypt of the key succeeded fails at once.
func (c *caller) prepare(x *exchange, ep *endpoint, ks *keyState, op Op, id requestID) failure {
	x.ks, x.op = ks, op
	bp := c.bodies.Get().(*[]byte)
	defer c.bodies.Put(bp)
	body := appendMetadata((*bp)[:0], ks.heads[op], id)
	switch op {
	case OpEncrypt:
		x.pt, x.aad = randomBytes(c.plaintextN, c.aadN)
		body = appendEncryptBody(body, x.pt, x.aad, c.cdiv)
	case OpDecrypt:
		s, ok := ks.ring.pick()
		if !ok {
			return failure{kind: kindClient, name: errNoCiphertext, message: "no encrypt of this key had succeeded yet"}
		}
		x.sample = s
		body = appendDecryptBody(body, &s)
	default:
		body = append(body, '}')
	}
	*bp = body
	path := ks.paths[op]
	amzDate, auth := c.signer.Sign(ep.host, path, body, time.Now())
	x.request = requests.Get().(*[]byte)
	*x.request = appendRequest((*x.request)[:0], ep.host, path, body, amzDate, auth)
	return failure{}
}

// check judges the outcome of x: the transport error, or the proxy's
// status and answer.
func (c *caller) check(x *exchange, status int, data []byte, err error) failure {
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
	switch x.op {
	case OpEncrypt:
		var enc xksclient.EncryptResponse
		if f := decode(data, &enc); !f.ok() {
			return f
		}
		if f := checkEncrypt(&enc, x.pt, x.aad, c.cdiv); !f.ok() {
			return f
		}
		x.ks.ring.put(sample{plaintext: x.pt, aad: x.aad, enc: enc})
	case OpDecrypt:
		var out decryptResponse
		if f := decode(data, &out); !f.ok() {
			return f
		}
		if pt := x.sample.plaintext; !bytes.Equal(out.Plaintext, pt) {
			// Never the bytes themselves: they are plaintext.
			return failure{kind: kindClient, name: errWrongPlaintext,
				message: fmt.Sprintf("decrypt answered %d bytes that are not the %d bytes encrypted", len(out.Plaintext), len(pt))}
		}
	case OpMetadata:
		var out xksclient.MetadataResponse
		if f := decode(data, &out); !f.ok() {
			return f
		}
		if out.KeySpec != "AES_256" || (out.KeyStatus != "ENABLED" && out.KeyStatus != "DISABLED") {
			return failure{kind: kindClient, name: errBadResponse, message: clip(fmt.Sprintf("metadata keySpec %q keyStatus %q", out.KeySpec, out.KeyStatus))}
		}
	case OpHealth:
		var out xksclient.HealthResponse
		if f := decode(data, &out); !f.ok() {
			return f
		}
		if out.FleetSize < 1 || len(out.Fleet) < 1 || len(out.Fleet) > 10 {
			return failure{kind: kindClient, name: errBadResponse, message: fmt.Sprintf("health xksProxyFleetSize %d with %d ekmFleetDetails", out.FleetSize, len(out.Fleet))}
		}
	}
	return failure{}
}

// decode decodes a 200 answer into out.
func decode(data []byte, out any) failure {
	if err := decodeAnswer(data, out); err != nil {
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
