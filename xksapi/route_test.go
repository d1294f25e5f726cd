package xksapi

import (
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/fsm"
)

func TestParseRoute(t *testing.T) {
	ok := []struct {
		path, uriPath, key string
		op                 Operation
	}{
		{"/kms/xks/v1/health", "/kms/xks/v1", "", OpHealth},
		{"/a/kms/xks/v1/health", "/a/kms/xks/v1", "", OpHealth},
		{"/a/b-c_d/kms/xks/v1/keys/k1/encrypt", "/a/b-c_d/kms/xks/v1", "k1", OpEncrypt},
		{"/p/kms/xks/v1/keys/my.key-1_x/decrypt", "/p/kms/xks/v1", "my.key-1_x", OpDecrypt},
		{"/kms/xks/v1/keys/K/metadata", "/kms/xks/v1", "K", OpMetadata},
		{"/p/kms/xks/v1/keys/" + strings.Repeat("k", 128) + "/metadata", "/p/kms/xks/v1", strings.Repeat("k", 128), OpMetadata},
	}
	for _, c := range ok {
		r, found := parseRoute([]byte(c.path))
		if !found || r.op != c.op || string(r.uriPath) != c.uriPath || string(r.keyID) != c.key {
			t.Errorf("parseRoute(%q) = {%v %q %q} %v", c.path, r.op, r.uriPath, r.keyID, found)
		}
	}
	bad := []string{
		"", "x", "/", "/kms/xks/v1", "/kms/xks/v1/keys", "/kms/xks/v1/keys/k",
		"/kms/xks/v1/keys/k/sign", "/kms/xks/v1/keys//encrypt", "//kms/xks/v1/health",
		"/p//kms/xks/v1/health", "/p/./kms/xks/v1/health", "/p/../kms/xks/v1/health",
		"/kms/xks/v1/keys/./encrypt", "/kms/xks/v1/keys/../encrypt", "/kms/xks/v1/keys/k%41/encrypt",
		"/kms/xks/v1/keys/k/encrypt/", "/kms/xks/v1/keys/a/b/encrypt", "/kms/xks/v2/health",
		"/kms/xks/v1/keys/" + strings.Repeat("k", 129) + "/encrypt", "/kms/xks/v1/keys/k~/encrypt",
		"/" + strings.Repeat("a", 240) + "/kms/xks/v1/health",
	}
	for _, p := range bad {
		if r, found := parseRoute([]byte(p)); found {
			t.Errorf("parseRoute(%q) accepted: {%v %q %q}", p, r.op, r.uriPath, r.keyID)
		}
	}
}

// TestOperationNames: the data plane names its operations as the
// specification does, in logs and error messages, and asks grants about the
// same three operations fsm names; health is no grant's business.
func TestOperationNames(t *testing.T) {
	for op, want := range map[Operation]struct {
		name  string
		grant fsm.Operation
	}{
		OpMetadata: {"GetKeyMetadata", fsm.OperationGetKeyMetadata},
		OpEncrypt:  {"Encrypt", fsm.OperationEncrypt},
		OpDecrypt:  {"Decrypt", fsm.OperationDecrypt},
		OpHealth:   {"GetHealthStatus", 0},
		OpUnknown:  {"unknown", 0},
	} {
		if op.String() != want.name || op.grantOp() != want.grant {
			t.Errorf("%d: %q %v, want %q %v", op, op.String(), op.grantOp(), want.name, want.grant)
		}
	}
}
