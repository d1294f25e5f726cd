package cluster

import (
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/fsm"
)

// A seed the cluster would refuse is found before the node starts, every
// problem at once, and nothing secret is quoted.
func TestSeedCheck(t *testing.T) {
	secret := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ="
	good := SeedSpec{
		KeyStores: []SeedKeyStore{{Name: "payments", URIPath: "/payments/kms/xks/v1", Region: "eu-west-1", GrantsMode: fsm.GrantsClosed,
			KeyMode: fsm.KeyModeReplicated, Credentials: []SeedCredential{{AccessKeyID: "AAAAAAAAAAAAAAAAAAAAAAAA", Secret: []byte(secret)}}}},
		Keys: []SeedKey{{KeyStore: "payments", ID: "k1", Usage: fsm.UsageEncrypt | fsm.UsageDecrypt}},
	}
	if err := good.Check(); err != nil {
		t.Fatalf("a good seed: %v", err)
	}
	bad := good
	bad.KeyStores = []SeedKeyStore{good.KeyStores[0]}
	bad.KeyStores[0].URIPath = "/payments/kms/xks/v2"
	bad.KeyStores[0].Credentials = []SeedCredential{{AccessKeyID: "AAAAAAAAAAAAAAAAAAAAAAAA", Secret: []byte("short!")}}
	err := bad.Check()
	if err == nil || !strings.Contains(err.Error(), "/payments/kms/xks/v2") || !strings.Contains(err.Error(), "AAAAAAAAAAAAAAAAAAAAAAAA") {
		t.Fatalf("a seed with a bad URI path and a short secret: %v", err)
	}
	if strings.Contains(err.Error(), "short!") {
		t.Fatalf("the error quotes the secret: %v", err)
	}
	adopt := good
	adopt.Keys = []SeedKey{{KeyStore: "payments", ID: "k1", HSMLabel: "existing", Usage: fsm.UsageEncrypt}}
	if err := adopt.Check(); err == nil || !strings.Contains(err.Error(), "shared-mode") {
		t.Fatalf("adopting a label in a replicated key store: %v", err)
	}
}
