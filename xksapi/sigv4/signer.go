package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Signer signs requests the way AWS KMS signs XKS proxy requests:
// SignedHeaders=host;x-amz-date and the body hashed into the signature. The
// proxy itself only verifies; Signer is for tests, benchmarks and tools that
// play the AWS KMS side. It shares the canonicalisation code with Verify, so
// it is no independent check of it (the curl test and AWS's vectors are).
type Signer struct {
	AccessKeyID string
	Secret      []byte
	Region      string
	Service     string // empty means Service
}

// Sign returns the Authorization and X-Amz-Date header values for a request
// sent at t with the given Host header. It fails, with the error Verify would
// return, for a method or path Verify would refuse.
func (s Signer) Sign(method, rawPath, host string, body []byte, t time.Time) (authorization, amzDate string, err error) {
	service := s.Service
	if service == "" {
		service = Service
	}
	amz := []byte(t.UTC().Format(AmzDateFormat))
	sc := scope{amzDate: amz, date: amz[:8], region: []byte(s.Region), service: []byte(service)}
	req := Request{
		Method:  []byte(method),
		RawPath: []byte(rawPath),
		Header:  signerHeaders{host: []byte(host)},
		Body:    body,
	}
	const signedHeaders = "host;x-amz-date"
	scr := getScratch()
	defer putScratch(scr)
	if err := scr.stringToSign(&req, nil, []byte(signedHeaders), &sc); err != nil {
		return "", "", err
	}
	key := deriveKey(s.Secret, sc.date, sc.region, sc.service)
	mac := hmac.New(sha256.New, key[:])
	mac.Write(scr.buf)
	a := Authorization{
		AccessKeyID:   []byte(s.AccessKeyID),
		Date:          sc.date,
		Region:        sc.region,
		Service:       sc.service,
		SignedHeaders: []byte(signedHeaders),
		Signature:     hex.AppendEncode(nil, mac.Sum(nil)),
	}
	header := appendAuthorization(nil, &a)
	// Parsing the result catches an access key id, region or service that
	// the verifier would refuse, before a request is ever sent with it.
	if _, err := ParseAuthorization(header); err != nil {
		return "", "", err
	}
	return string(header), string(amz), nil
}

// signerHeaders is the header set Signer signs; x-amz-date never reaches
// Peek because stringToSign takes it from the scope.
type signerHeaders struct{ host []byte }

func (h signerHeaders) Peek(name string) []byte {
	if name == "host" {
		return h.host
	}
	return nil
}

// appendAuthorization renders a in the canonical layout AWS signers use.
func appendAuthorization(b []byte, a *Authorization) []byte {
	b = append(b, Algorithm+" Credential="...)
	b = append(b, a.AccessKeyID...)
	b = append(b, '/')
	b = appendScope(b, &scope{date: a.Date, region: a.Region, service: a.Service})
	b = append(b, ", SignedHeaders="...)
	b = append(b, a.SignedHeaders...)
	b = append(b, ", Signature="...)
	return append(b, a.Signature...)
}
