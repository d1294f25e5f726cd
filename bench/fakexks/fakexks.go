// Package fakexks is an in-process XKS proxy for the bench's own tests:
// HTTPS on loopback, SigV4 checked, real AES-256-GCM, and faults on demand
// (a stall, wrong plaintext, a wrong CDIV, throttling) so that tests can
// prove what the bench reports when a proxy misbehaves. It shares no code
// with the real proxy.
package fakexks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/xksclient"
)

// The credential and layout every fake server uses.
const (
	URIPath     = "/test/kms/xks/v1"
	Region      = "us-east-1"
	AccessKeyID = "AKIAFAKEXKSBENCH2345"
	Secret      = "fakexks-secret-used-only-in-tests-0123456789abcdef"
)

// Server is a fake XKS proxy. Its fault fields may be changed while it runs.
type Server struct {
	*httptest.Server
	// CAFile is a PEM file of the certificate the server presents.
	CAFile string

	stallFrom, stallUntil atomic.Int64 // unix ns; requests arriving in between wait until stallUntil
	wrongPlaintext        atomic.Bool
	wrongCDIV             atomic.Bool
	throttleAbove         atomic.Int64 // requests per second beyond which it answers 429; 0 for never

	mu       sync.Mutex
	keys     map[string]cipher.AEAD
	arrivals []time.Time // within the last second, for throttling

	requests atomic.Int64
}

// Start serves a fake proxy on loopback and writes its certificate to a PEM
// file under dir.
func Start(dir string) (*Server, error) {
	s := &Server{keys: map[string]cipher.AEAD{}}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.handle))
	s.CAFile = filepath.Join(dir, "fakexks-ca.pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(s.CAFile, block, 0o644); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Stall makes every request that arrives in [from, until) wait until
// until before it is answered.
func (s *Server) Stall(from, until time.Time) {
	s.stallFrom.Store(from.UnixNano())
	s.stallUntil.Store(until.UnixNano())
}

// WrongPlaintext makes decrypt answer bytes other than those encrypted.
func (s *Server) WrongPlaintext(on bool) { s.wrongPlaintext.Store(on) }

// WrongCDIV makes encrypt answer a CDIV that does not match.
func (s *Server) WrongCDIV(on bool) { s.wrongCDIV.Store(on) }

// ThrottleAbove makes the server answer 429 ThrottlingException to requests
// beyond perSecond in any one-second window; 0 turns it off.
func (s *Server) ThrottleAbove(perSecond int) { s.throttleAbove.Store(int64(perSecond)) }

// Requests is how many requests the server has received.
func (s *Server) Requests() int64 { return s.requests.Load() }

func xksError(w http.ResponseWriter, status int, name, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"errorName": name, "errorMessage": message})
}

func answer(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	s.requests.Add(1)
	if from, until := s.stallFrom.Load(), s.stallUntil.Load(); arrived.UnixNano() >= from && arrived.UnixNano() < until {
		time.Sleep(time.Until(time.Unix(0, until)))
	}
	if r.Method != http.MethodPost {
		xksError(w, http.StatusMethodNotAllowed, "UnsupportedOperationException", "POST only")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		xksError(w, http.StatusBadRequest, "ValidationException", "unreadable body")
		return
	}
	want, auth := xksclient.Credentials{AccessKeyID: AccessKeyID, Secret: Secret, Region: Region}.
		Sign(r.Host, r.URL.Path, body, parseAmzDate(r.Header.Get("X-Amz-Date")))
	if r.Header.Get("X-Amz-Date") != want || r.Header.Get("Authorization") != auth {
		xksError(w, http.StatusUnauthorized, "AuthenticationFailedException", "bad signature")
		return
	}
	if s.throttled(arrived) {
		xksError(w, http.StatusTooManyRequests, "ThrottlingException", "over the fake's rate")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, URIPath+"/")
	if !ok {
		xksError(w, http.StatusNotFound, "InvalidUriPathException", "unknown path")
		return
	}
	if rest == "health" {
		answer(w, map[string]any{"xksProxyFleetSize": 1, "xksProxyVendor": "fakexks", "xksProxyModel": "fakexks 1",
			"ekmVendor": "none", "ekmFleetDetails": []map[string]string{{"id": "fake", "model": "memory", "healthStatus": "ACTIVE"}}})
		return
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] != "keys" {
		xksError(w, http.StatusNotFound, "InvalidUriPathException", "unknown path")
		return
	}
	aead := s.key(parts[1])
	switch parts[2] {
	case "metadata":
		answer(w, xksclient.MetadataResponse{KeySpec: "AES_256", KeyUsage: []string{"ENCRYPT", "DECRYPT"}, KeyStatus: "ENABLED"})
	case "encrypt":
		var req xksclient.EncryptRequest
		if json.Unmarshal(body, &req) != nil {
			xksError(w, http.StatusBadRequest, "ValidationException", "bad JSON")
			return
		}
		md := []byte{1}
		iv := make([]byte, 12)
		_, _ = rand.Read(iv)
		sealed := aead.Seal(nil, iv, req.Plaintext, hsmAAD(req.AAD, md))
		out := xksclient.EncryptResponse{Ciphertext: sealed[:len(req.Plaintext)], Tag: sealed[len(req.Plaintext):], IV: iv, CiphertextMetadata: md}
		if req.CDIVAlgorithm == "SHA_256" {
			out.CDIV = xksclient.CDIV(req.AAD, md, iv, out.Ciphertext, out.Tag)
			if s.wrongCDIV.Load() {
				out.CDIV[0] ^= 1
			}
		}
		answer(w, out)
	case "decrypt":
		var req xksclient.DecryptRequest
		if json.Unmarshal(body, &req) != nil {
			xksError(w, http.StatusBadRequest, "ValidationException", "bad JSON")
			return
		}
		pt, err := aead.Open(nil, req.IV, append(append([]byte(nil), req.Ciphertext...), req.Tag...), hsmAAD(req.AAD, req.CiphertextMetadata))
		if err != nil {
			xksError(w, http.StatusBadRequest, "InvalidCiphertextException", "does not authenticate")
			return
		}
		if s.wrongPlaintext.Load() && len(pt) > 0 {
			pt[0] ^= 0x80
		}
		answer(w, map[string][]byte{"plaintext": pt})
	default:
		xksError(w, http.StatusNotFound, "InvalidUriPathException", "unknown operation")
	}
}

func parseAmzDate(s string) time.Time {
	t, err := time.Parse(xksclient.AmzDateFormat, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// hsmAAD binds ciphertextMetadata into the tag as the specification says.
func hsmAAD(aad, md []byte) []byte {
	out := binary.BigEndian.AppendUint16(nil, uint16(len(aad)))
	out = append(out, aad...)
	out = append(out, byte(len(md)))
	return append(out, md...)
}

func (s *Server) key(id string) cipher.AEAD {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[id]; ok {
		return k
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	block, _ := aes.NewCipher(raw)
	aead, _ := cipher.NewGCM(block)
	s.keys[id] = aead
	return aead
}

func (s *Server) throttled(now time.Time) bool {
	limit := s.throttleAbove.Load()
	if limit == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := 0
	for cut < len(s.arrivals) && now.Sub(s.arrivals[cut]) >= time.Second {
		cut++
	}
	s.arrivals = append(s.arrivals[cut:], now)
	return int64(len(s.arrivals)) > limit
}
