package xksapi

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

const md = `"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::1:user/a","kmsKeyArn":"arn:aws:kms:us-east-1:1:key/k","kmsOperation":"Encrypt","kmsRequestId":"r1"}`

func TestDecodeRequest(t *testing.T) {
	pt := base64.StdEncoding.EncodeToString(make([]byte, 4300))
	aad := base64.StdEncoding.EncodeToString(make([]byte, 8192))
	iv := base64.StdEncoding.EncodeToString(make([]byte, 12))
	tag := base64.StdEncoding.EncodeToString(make([]byte, 16))
	longARN := "arn:aws:iam::1:role/" + strings.Repeat("r", 2048-20)
	cases := []struct {
		name string
		op   Operation
		body string
		want ErrorName // "" = accepted
	}{
		{"encrypt at the size minimums", OpEncrypt, `{` + md + `,"plaintext":"` + pt + `","additionalAuthenticatedData":"` + aad + `","encryptionAlgorithm":"AES_GCM"}`, ""},
		{"unknown fields and kmsOperation", OpEncrypt, `{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"k","kmsOperation":"BulkEncrypt","kmsRequestId":"not-a-uuid","newField":1},"plaintext":"AA==","encryptionAlgorithm":"AES_GCM","future":{"x":[1]}}`, ""},
		{"2048-char ARN", OpMetadata, `{"requestMetadata":{"awsPrincipalArn":"` + longARN + `","kmsOperation":"DescribeKey","kmsRequestId":"r"}}`, ""},
		{"empty plaintext", OpEncrypt, `{` + md + `,"plaintext":"","encryptionAlgorithm":"AES_GCM"}`, ""},
		{"not JSON", OpEncrypt, `{`, ValidationException},
		{"no metadata", OpEncrypt, `{"plaintext":"AA==","encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"no principal", OpMetadata, `{"requestMetadata":{"kmsOperation":"x","kmsRequestId":"r"}}`, ValidationException},
		{"no request id", OpMetadata, `{"requestMetadata":{"awsPrincipalArn":"a","kmsOperation":"x"}}`, ValidationException},
		{"no key arn on encrypt", OpEncrypt, `{"requestMetadata":{"awsPrincipalArn":"a","kmsOperation":"x","kmsRequestId":"r"},"plaintext":"AA==","encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"no plaintext", OpEncrypt, `{` + md + `,"encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"bad base64", OpEncrypt, `{` + md + `,"plaintext":"!!","encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"number for string", OpEncrypt, `{` + md + `,"plaintext":5,"encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"byte array for base64", OpEncrypt, `{` + md + `,"plaintext":[1,2,3],"encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"no algorithm", OpEncrypt, `{` + md + `,"plaintext":"AA=="}`, ValidationException},
		{"other algorithm", OpEncrypt, `{` + md + `,"plaintext":"AA==","encryptionAlgorithm":"AES_CBC"}`, UnsupportedOperationException},
		{"other CDIV algorithm", OpEncrypt, `{` + md + `,"plaintext":"AA==","encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"MD5"}`, UnsupportedOperationException},
		{"plaintext over limit", OpEncrypt, `{` + md + `,"plaintext":"` + base64.StdEncoding.EncodeToString(make([]byte, 4301)) + `","encryptionAlgorithm":"AES_GCM"}`, UnsupportedOperationException},
		{"AAD over limit", OpEncrypt, `{` + md + `,"plaintext":"AA==","additionalAuthenticatedData":"` + base64.StdEncoding.EncodeToString(make([]byte, 8193)) + `","encryptionAlgorithm":"AES_GCM"}`, UnsupportedOperationException},
		{"ARN over limit", OpMetadata, `{"requestMetadata":{"awsPrincipalArn":"` + longARN + `x","kmsOperation":"x","kmsRequestId":"r"}}`, UnsupportedOperationException},
		{"decrypt ok", OpDecrypt, `{` + md + `,"ciphertext":"AA==","initializationVector":"` + iv + `","authenticationTag":"` + tag + `","encryptionAlgorithm":"AES_GCM"}`, ""},
		{"decrypt 10-byte IV", OpDecrypt, `{` + md + `,"ciphertext":"AA==","initializationVector":"` + base64.StdEncoding.EncodeToString(make([]byte, 10)) + `","authenticationTag":"` + tag + `","encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"decrypt short tag", OpDecrypt, `{` + md + `,"ciphertext":"AA==","initializationVector":"` + iv + `","authenticationTag":"AAAA","encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"decrypt no tag", OpDecrypt, `{` + md + `,"ciphertext":"AA==","initializationVector":"` + iv + `","encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"decrypt 21-byte metadata", OpDecrypt, `{` + md + `,"ciphertext":"AA==","ciphertextMetadata":"` + base64.StdEncoding.EncodeToString(make([]byte, 21)) + `","initializationVector":"` + iv + `","authenticationTag":"` + tag + `","encryptionAlgorithm":"AES_GCM"}`, ValidationException},
		{"health with garbage", OpHealth, `nonsense`, ValidationException},
		{"health without metadata", OpHealth, `{}`, ValidationException},
		{"health with empty metadata", OpHealth, `{"requestMetadata":{}}`, ValidationException},
		{"health minimal", OpHealth, `{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"KmsHealthCheck"}}`, ""},
	}
	for _, c := range cases {
		var req request
		err := decodeRequest([]byte(c.body), c.op, DefaultLimits, &req)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && err == nil:
			t.Errorf("%s: accepted, want %s", c.name, c.want)
		case c.want != "" && err.name != c.want:
			t.Errorf("%s: %s (%s), want %s", c.name, err.name, err.message, c.want)
		}
	}
}

func TestErrorBodyIsSpecificationJSON(t *testing.T) {
	msg := "quote \" backslash \\ newline \n high \xff" + strings.Repeat("x", 600)
	body := appendErrorBody(nil, InvalidCiphertextException, msg)
	var got struct {
		ErrorName    string `json:"errorName"`
		ErrorMessage string `json:"errorMessage"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if got.ErrorName != "InvalidCiphertextException" {
		t.Fatalf("errorName = %q", got.ErrorName)
	}
	if len(got.ErrorMessage) >= 512 {
		t.Fatalf("errorMessage is %d characters; the specification wants under 512", len(got.ErrorMessage))
	}
	for _, c := range []byte(got.ErrorMessage) {
		if c < 0x20 || c > 0x7e {
			t.Fatalf("errorMessage holds non-printable byte %#x", c)
		}
	}
}

func TestErrorStatuses(t *testing.T) {
	want := map[ErrorName]int{
		ValidationException: 400, InvalidStateException: 400, InvalidCiphertextException: 400,
		InvalidKeyUsageException: 400, AuthenticationFailedException: 401, AccessDeniedException: 403,
		KeyNotFoundException: 404, InvalidURIPathException: 404, ThrottlingException: 429,
		UnsupportedOperationException: 501, DependencyTimeoutException: 503, InternalException: 500,
	}
	for name, status := range want {
		if got := name.Status(); got != status {
			t.Errorf("%s.Status() = %d, want %d", name, got, status)
		}
	}
}

func TestResponsesAreJSON(t *testing.T) {
	var enc struct {
		Ciphertext, CiphertextMetadata, InitializationVector, AuthenticationTag, CiphertextDataIntegrityValue []byte
	}
	r := encryptResult{ciphertext: []byte("ct"), metadata: []byte{1, 0, 0, 0, 1}, iv: make([]byte, 12), tag: make([]byte, 16), cdiv: []byte("h")}
	if err := json.Unmarshal(appendEncryptResponse(nil, &r), &enc); err != nil || string(enc.Ciphertext) != "ct" || string(enc.CiphertextDataIntegrityValue) != "h" {
		t.Fatalf("encrypt response: %v %+v", err, enc)
	}
	var meta struct {
		KeySpec   string   `json:"keySpec"`
		KeyUsage  []string `json:"keyUsage"`
		KeyStatus string   `json:"keyStatus"`
	}
	if err := json.Unmarshal(appendMetadataResponse(nil, []string{"ENCRYPT", "DECRYPT"}, false), &meta); err != nil ||
		meta.KeySpec != "AES_256" || len(meta.KeyUsage) != 2 || meta.KeyStatus != "DISABLED" {
		t.Fatalf("metadata response: %v %+v", err, meta)
	}
	var health map[string]any
	h := HealthReport{FleetSize: 1, Vendor: "v\"", Model: "m\x01", EKMVendor: "e", Fleet: []FleetMember{{"id", "model", "ACTIVE"}}}
	if err := json.Unmarshal(appendHealthResponse(nil, &h), &health); err != nil || health["xksProxyVendor"] != "v\"" || health["xksProxyModel"] != "m\x01" {
		t.Fatalf("health response: %v %v", err, health)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{`+md+`,"plaintext":"AA==","encryptionAlgorithm":"AES_GCM"}`), uint8(OpEncrypt))
	f.Add([]byte(`{`+md+`,"ciphertext":"AA==","initializationVector":"AAAAAAAAAAAAAAAA","authenticationTag":"AAAAAAAAAAAAAAAAAAAAAA==","encryptionAlgorithm":"AES_GCM"}`), uint8(OpDecrypt))
	f.Add([]byte(`{"requestMetadata":null}`), uint8(OpMetadata))
	f.Add([]byte(`[]`), uint8(OpHealth))
	f.Fuzz(func(t *testing.T, body []byte, op uint8) {
		o := Operation(op%4 + 1)
		var req request
		err := decodeRequest(body, o, DefaultLimits, &req)
		if err != nil {
			if err.name.Status() != 400 && err.name.Status() != 501 {
				t.Fatalf("decode answered %s, which is not an input error", err.name)
			}
			return
		}
		if o == OpEncrypt && (req.Plaintext == nil || len(req.Plaintext) > DefaultLimits.MaxPlaintext || len(req.AAD) > DefaultLimits.MaxAAD) {
			t.Fatalf("accepted an encrypt outside the limits")
		}
		if o == OpDecrypt && (len(req.AuthenticationTag) != 16 || (len(req.InitializationVector) != 12 && len(req.InitializationVector) != 16)) {
			t.Fatalf("accepted a decrypt with a bad IV or tag")
		}
	})
}
