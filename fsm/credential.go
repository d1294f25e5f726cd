package fsm

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
)

// GenerateCredential makes a new SigV4 credential in the shapes the
// specification asks for: a 24-character access key id of A-Z 2-7 and a
// 44-character secret carrying 256 bits from the CSPRNG.
func GenerateCredential() Credential {
	id := make([]byte, 15)
	rand.Read(id)
	secret := make([]byte, 32)
	rand.Read(secret)
	return Credential{
		AccessKeyID: base32.StdEncoding.EncodeToString(id),
		Secret:      []byte(base64.StdEncoding.EncodeToString(secret)),
	}
}
