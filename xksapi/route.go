package xksapi

import (
	"bytes"

	"github.com/xksproxy/xksproxy/fsm"
)

// Operation is an XKS API operation, decided by the URI.
type Operation uint8

const (
	OpUnknown Operation = iota
	OpMetadata
	OpEncrypt
	OpDecrypt
	OpHealth
)

// grantOps are the key operations as grants name them. GetHealthStatus is
// no key's operation, and no grant governs it.
var grantOps = [...]fsm.Operation{OpMetadata: fsm.OperationGetKeyMetadata, OpEncrypt: fsm.OperationEncrypt, OpDecrypt: fsm.OperationDecrypt}

// grantOp is o as grants name it; 0 for GetHealthStatus and OpUnknown.
func (o Operation) grantOp() fsm.Operation {
	if int(o) < len(grantOps) {
		return grantOps[o]
	}
	return 0
}

func (o Operation) String() string {
	if g := o.grantOp(); g != 0 {
		return g.String()
	}
	if o == OpHealth {
		return "GetHealthStatus"
	}
	return "unknown"
}

// route is what the request line says: which key store (by URI path), which
// key and which operation. Its slices alias the request.
type route struct {
	op      Operation
	uriPath []byte
	keyID   []byte
}

const (
	apiSuffix     = "/kms/xks/v1"
	healthSuffix  = apiSuffix + "/health"
	keysSegment   = apiSuffix + "/keys/"
	maxRequestURI = 256 - len("https://")
)

// parseRoute splits a raw request path into a route. It refuses anything
// ambiguous — empty segments, dot segments, percent-escapes, characters the
// specification never uses — rather than normalise it, because the SigV4
// signature covers the path exactly as sent and a guess could let two
// different strings reach the same key. The bool is false when the path is
// not an XKS API path at all.
func parseRoute(path []byte) (route, bool) {
	if len(path) == 0 || path[0] != '/' || len(path) > maxRequestURI {
		return route{}, false
	}
	for _, c := range path {
		if !isPathByte(c) {
			return route{}, false
		}
	}
	if bytes.Contains(path, []byte("//")) || bytes.Contains(path, []byte("/./")) ||
		bytes.Contains(path, []byte("/../")) || bytes.HasSuffix(path, []byte("/.")) ||
		bytes.HasSuffix(path, []byte("/..")) {
		return route{}, false
	}
	if bytes.HasSuffix(path, []byte(healthSuffix)) {
		return route{op: OpHealth, uriPath: path[:len(path)-len("/health")]}, true
	}
	// .../kms/xks/v1/keys/<id>/<operation>: the id holds no '/', so split from the end.
	last := bytes.LastIndexByte(path, '/')
	opName := path[last+1:]
	rest := path[:last]
	mid := bytes.LastIndexByte(rest, '/')
	if mid < 0 {
		return route{}, false
	}
	keyID := rest[mid+1:]
	head := rest[:mid+1]
	if !bytes.HasSuffix(head, []byte(keysSegment)) || !validKeyID(keyID) {
		return route{}, false
	}
	r := route{uriPath: head[:len(head)-len("/keys/")], keyID: keyID}
	switch string(opName) {
	case "metadata":
		r.op = OpMetadata
	case "encrypt":
		r.op = OpEncrypt
	case "decrypt":
		r.op = OpDecrypt
	default:
		return route{}, false
	}
	return r, true
}

// isPathByte allows the characters of XksProxyUriPath and externalKeyId.
func isPathByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '/' || c == '-' || c == '_' || c == '.'
}

func validKeyID(id []byte) bool {
	if len(id) == 0 || len(id) > 128 || string(id) == "." || string(id) == ".." {
		return false
	}
	for _, c := range id {
		if c == '/' {
			return false
		}
	}
	return true
}
