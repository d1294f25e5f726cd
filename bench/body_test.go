package bench

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/xksproxy/xksproxy/xksclient"
)

// TestRequestBodiesMatchEncodingJSON checks the hand-made bodies against
// json.Marshal of the xksclient request types, byte for byte, with names
// that need escaping and with the optional fields absent and present.
func TestRequestBodiesMatchEncodingJSON(t *testing.T) {
	id := requestID{prefix: "xksbench-0a1b2c3d-1-0-", n: 42}
	for _, principal := range []string{"arn:aws:iam::111122223333:role/xksbench", `arn:aws:iam::1:role/"q"<&>\` + "\u2028é", ""} {
		keyARN := "arn:aws:kms:us-east-1:111122223333:key/k<1>"
		md := func(op Op) xksclient.RequestMetadata {
			m := xksclient.RequestMetadata{KMSOperation: kmsOperation[op], KMSRequestID: "xksbench-0a1b2c3d-1-0-42"}
			if op != OpHealth {
				m.AWSPrincipalARN = principal
			}
			if op == OpEncrypt || op == OpDecrypt {
				m.KMSKeyARN = keyARN
			}
			return m
		}
		body := func(op Op) []byte { return appendMetadata(nil, requestHead(op, principal, keyARN), id) }
		check := func(name string, got []byte, v any) {
			t.Helper()
			want, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("%s:\n got %s\nwant %s", name, got, want)
			}
		}
		for _, aad := range [][]byte{nil, []byte("aad\x00\xff")} {
			for _, cdiv := range []bool{false, true} {
				req := xksclient.EncryptRequest{RequestMetadata: md(OpEncrypt), Plaintext: []byte("plaintext"), AAD: aad, Algorithm: "AES_GCM"}
				if cdiv {
					req.CDIVAlgorithm = "SHA_256"
				}
				check("encrypt", appendEncryptBody(body(OpEncrypt), req.Plaintext, aad, cdiv), req)
			}
			for _, meta := range [][]byte{nil, {1, 0, 0, 0, 1}} {
				s := sample{plaintext: []byte("p"), aad: aad, enc: xksclient.EncryptResponse{Ciphertext: []byte("c"), CiphertextMetadata: meta,
					IV: make([]byte, 12), Tag: make([]byte, 16)}}
				check("decrypt", appendDecryptBody(body(OpDecrypt), &s), xksclient.DecryptRequest{RequestMetadata: md(OpDecrypt),
					Ciphertext: s.enc.Ciphertext, CiphertextMetadata: meta, Algorithm: "AES_GCM", AAD: aad, IV: s.enc.IV, Tag: s.enc.Tag})
			}
		}
		for _, op := range []Op{OpMetadata, OpHealth} {
			check(op.String(), append(body(op), '}'), struct {
				RequestMetadata xksclient.RequestMetadata `json:"requestMetadata"`
			}{md(op)})
		}
	}
}

// TestDecodeAnswerMatchesEncodingJSON feeds the answer decoder what
// proxies send and what they might: every input must come out exactly as
// encoding/json decodes it, or fail where it fails.
func TestDecodeAnswerMatchesEncodingJSON(t *testing.T) {
	encrypts := []string{
		`{"ciphertext":"d74N/BozOb7ezlyW","ciphertextMetadata":"AQAAAAE=","initializationVector":"U3mkkucyOgks/m48","authenticationTag":"DHKKqDt3U2wSxrk5M8ertw==","ciphertextDataIntegrityValue":"+YCWQY0fTODaUZXQf7bYyX95Hg09Ry/3KV9nQqox3xc="}`,
		" {\n\t\"ciphertext\" : \"AAAA\" ,\r\n\"initializationVector\":\"\", \"authenticationTag\":\"AQ==\"}\n",
		`{}`,
		`{"ciphertext":"AAAA","ciphertext":"AQID"}`,
		`{"ciphertext":"AA\/A"}`,
		`{"Ciphertext":"AAAA"}`,
		`{"ciphertext":"AAAA","xksProxyNew":1}`,
		`{"ciphertext":null}`,
		`{"ciphertext":"A=A"}`,
		`{"ciphertext":"AAAA",}`,
		`{"ciphertext":"AAAA"} x`,
		`{"ciphertext":"AAAA"`,
		`["ciphertext"]`,
		`{"ciphertext":"AA` + "\x01" + `AA"}`,
		`{"ciphertext":"AA` + "\u00e9" + `"}`,
		``,
	}
	for _, in := range encrypts {
		var got, want xksclient.EncryptResponse
		gotErr, wantErr := decodeAnswer([]byte(in), &got), json.Unmarshal([]byte(in), &want)
		if (gotErr == nil) != (wantErr == nil) || (wantErr == nil && !reflect.DeepEqual(got, want)) {
			t.Errorf("encrypt %q: got %+v, %v; encoding/json %+v, %v", in, got, gotErr, want, wantErr)
		}
	}
	for _, in := range []string{`{"plaintext":"SGVsbG8gV29ybGQh"}`, `{"plaintext":""}`, `{"plaintext":"SGVsbG8=","other":"x"}`, `{"plaintext":5}`} {
		var got, want decryptResponse
		gotErr, wantErr := decodeAnswer([]byte(in), &got), json.Unmarshal([]byte(in), &want)
		if (gotErr == nil) != (wantErr == nil) || (wantErr == nil && !reflect.DeepEqual(got, want)) {
			t.Errorf("decrypt %q: got %+v, %v; encoding/json %+v, %v", in, got, gotErr, want, wantErr)
		}
	}
}

func BenchmarkDecodeEncrypt(b *testing.B) {
	in := []byte(`{"ciphertext":"d74N/BozOb7ezlyW","ciphertextMetadata":"AQAAAAE=","initializationVector":"U3mkkucyOgks/m48","authenticationTag":"DHKKqDt3U2wSxrk5M8ertw=="}`)
	b.ReportAllocs()
	for b.Loop() {
		var out xksclient.EncryptResponse
		if err := decodeAnswer(in, &out); err != nil {
			b.Fatal(err)
		}
	}
}
