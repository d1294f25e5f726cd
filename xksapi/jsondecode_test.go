package xksapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func ptrTo(s string) *string { return &s }

// Bodies shaped as AWS KMS sends them (the decrypt one carries the
// specification's Appendix C example); they seed the fuzzer and the
// benchmarks.
const (
	xksEncryptBody = `{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::111122223333:user/alice","kmsKeyArn":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab","kmsOperation":"Encrypt","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","kmsViaService":"ebs"},` +
		`"plaintext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","encryptionAlgorithm":"AES_GCM",` +
		`"additionalAuthenticatedData":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}`
	xksDecryptBody = `{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","awsSourceVpc":"vpc-0123456789abcdef0","awsSourceVpce":"vpce-0123456789abcdef0","kmsKeyArn":"arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab","kmsOperation":"Decrypt","kmsRequestId":"5112f4d6-db54-4af4-ae30-c55a22a8dfae","kmsViaService":"ebs"},` +
		`"additionalAuthenticatedData":"cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n","encryptionAlgorithm":"AES_GCM","ciphertext":"ghxkK1txeDNn3q8Y","ciphertextMetadata":"a2V5X3ZlcnNpb249MQ==","initializationVector":"HMrlRw85cAJUd5Ax","authenticationTag":"vBxN2ncH1oEkR8WVXpmyYQ=="}`
	xksMetadataBody = `{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:role/KMSAdmin","kmsOperation":"CreateKey","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae"}}`
	xksHealthBody   = `{"requestMetadata":{"kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","kmsOperation":"KmsHealthCheck"}}`
	xksCDIVBody     = `{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::1:user/a","kmsKeyArn":"arn:aws:kms:us-east-1:1:key/k","kmsOperation":"Encrypt","kmsRequestId":"r"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"SHA_256"}`
)

func TestDecodeJSON(t *testing.T) {
	encMD := &RequestMetadata{AWSPrincipalARN: "arn:aws:iam::111122223333:user/alice", KMSKeyARN: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		KMSOperation: "Encrypt", KMSRequestID: "4112f4d6-db54-4af4-ae30-c55a22a8dfae", KMSViaService: "ebs"}
	cases := []struct {
		name string
		body string
		want request
	}{
		{"encrypt", xksEncryptBody, request{RequestMetadata: encMD, Plaintext: make([]byte, 32), EncryptionAlgorithm: ptrTo("AES_GCM"), AAD: make([]byte, 64)}},
		{"decrypt, every field", xksDecryptBody, request{
			RequestMetadata: &RequestMetadata{AWSPrincipalARN: "arn:aws:iam::123456789012:user/Alice", AWSSourceVPC: "vpc-0123456789abcdef0", AWSSourceVPCE: "vpce-0123456789abcdef0",
				KMSKeyARN: "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", KMSOperation: "Decrypt", KMSRequestID: "5112f4d6-db54-4af4-ae30-c55a22a8dfae", KMSViaService: "ebs"},
			AAD: []byte("project=nile,department=marketing"), EncryptionAlgorithm: ptrTo("AES_GCM"), Ciphertext: mustStdB64(t, "ghxkK1txeDNn3q8Y"),
			CiphertextMetadata: []byte("key_version=1"), InitializationVector: mustStdB64(t, "HMrlRw85cAJUd5Ax"), AuthenticationTag: mustStdB64(t, "vBxN2ncH1oEkR8WVXpmyYQ==")}},
		{"CDIV algorithm", xksCDIVBody, request{
			RequestMetadata: &RequestMetadata{AWSPrincipalARN: "arn:aws:iam::1:user/a", KMSKeyARN: "arn:aws:kms:us-east-1:1:key/k", KMSOperation: "Encrypt", KMSRequestID: "r"},
			Plaintext:       []byte("Hello World!"), EncryptionAlgorithm: ptrTo("AES_GCM"), CDIVAlgorithm: ptrTo("SHA_256")}},
		{"health", xksHealthBody, request{RequestMetadata: &RequestMetadata{KMSRequestID: "4112f4d6-db54-4af4-ae30-c55a22a8dfae", KMSOperation: "KmsHealthCheck"}}},
		{"empty object", `{}`, request{}},
		{"top-level null", ` null `, request{}},
		{"unknown fields of every type", `{"s":"x\"}","n":-1.5e+3,"z":0,"t":true,"f":false,"u":null,"a":[1,"2",[{}],{"k":[]}],"o":{"plaintext":"!!","x":{"y":[null]}},` +
			`"requestMetadata":{"future":{"kmsKeyArn":5},"list":[],"kmsRequestId":"r"},"plaintext":"AQ=="}`,
			request{RequestMetadata: &RequestMetadata{KMSRequestID: "r"}, Plaintext: []byte{1}}},
		{"whitespace everywhere", " \t\r\n{ \"plaintext\" \n:\t\"AQ==\" , \"requestMetadata\" : { \"kmsOperation\" : \"op\" } , \"x\" : [ 1 , { } ] }\r\n ",
			request{RequestMetadata: &RequestMetadata{KMSOperation: "op"}, Plaintext: []byte{1}}},
		{"escapes", `{"requestMetadata":{"kmsRequestId":"q\"b\\s\/b\bf\fn\nr\rt\tu\u00e9\u20AC\ud83d\ude00","kmsOperation":"\u0000"}}`,
			request{RequestMetadata: &RequestMetadata{KMSRequestID: "q\"b\\s/b\bf\fn\nr\rt\tu\u00e9\u20ac\U0001F600", KMSOperation: "\x00"}}},
		{"escaped keys", `{"plain\u0074ext":"AQ==","\u0072equestMetadata":{"kms\u004BeyArn":"k"}}`,
			request{RequestMetadata: &RequestMetadata{KMSKeyARN: "k"}, Plaintext: []byte{1}}},
		{"lone surrogates and invalid UTF-8", `{"requestMetadata":{"kmsRequestId":"a\ud800b\udc00c\ud800\u0041` + "\xff\xed\xa0\x80" + `é"}}`,
			request{RequestMetadata: &RequestMetadata{KMSRequestID: "a\ufffdb\ufffdc\ufffdA\ufffd\ufffd\ufffd\ufffdé"}}},
		{"escaped base64 with newlines", `{"plaintext":"AQID\nBA\u003d\u003d","ciphertext":"\r\n"}`, request{Plaintext: []byte{1, 2, 3, 4}, Ciphertext: []byte{}}},
		{"padded base64", `{"plaintext":"AQI="}`, request{Plaintext: []byte{1, 2}}},
		{"nulls", `{"requestMetadata":null,"plaintext":null,"encryptionAlgorithm":null,"additionalAuthenticatedData":null,"ciphertextDataIntegrityValueAlgorithm":null,` +
			`"ciphertext":null,"ciphertextMetadata":null,"initializationVector":null,"authenticationTag":null}`, request{}},
		{"null metadata strings", `{"requestMetadata":{"awsPrincipalArn":null,"kmsKeyArn":"k","kmsKeyArn":null}}`, request{RequestMetadata: &RequestMetadata{KMSKeyARN: "k"}}},
		{"empty strings", `{"plaintext":"","encryptionAlgorithm":"","authenticationTag":"","requestMetadata":{"kmsKeyArn":""}}`,
			request{Plaintext: []byte{}, EncryptionAlgorithm: ptrTo(""), AuthenticationTag: []byte{}, RequestMetadata: &RequestMetadata{}}},
		{"duplicates: last wins", `{"plaintext":"AQ==","plaintext":"Ag==","encryptionAlgorithm":"A","encryptionAlgorithm":"B","ciphertext":"AQ==","ciphertext":null,"initializationVector":null,"initializationVector":""}`,
			request{Plaintext: []byte{2}, EncryptionAlgorithm: ptrTo("B"), InitializationVector: []byte{}}},
		{"duplicates: null clears", `{"ciphertextDataIntegrityValueAlgorithm":"SHA_256","ciphertextDataIntegrityValueAlgorithm":null,"authenticationTag":"AQ==","authenticationTag":null}`, request{}},
		{"duplicate requestMetadata objects merge", `{"requestMetadata":{"kmsKeyArn":"k","kmsOperation":"x"},"requestMetadata":{"kmsOperation":"y"}}`,
			request{RequestMetadata: &RequestMetadata{KMSKeyARN: "k", KMSOperation: "y"}}},
		{"requestMetadata null then object", `{"requestMetadata":{"kmsKeyArn":"k"},"requestMetadata":null,"requestMetadata":{"kmsOperation":"y"}}`,
			request{RequestMetadata: &RequestMetadata{KMSOperation: "y"}}},
		{"case differs: not ours", `{"Plaintext":"AQ==","REQUESTMETADATA":{},"requestMetadata":{"KmsKeyArn":"k"}}`, request{RequestMetadata: &RequestMetadata{}}},
		{"63 levels inside the body", `{"x":` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `}`, request{}},
	}
	for _, c := range cases {
		var got request
		if err := decodeJSON([]byte(c.body), &got); err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %s\nwant %s", c.name, dumpRequest(got), dumpRequest(c.want))
		}
		if strings.HasPrefix(c.name, "case differs") {
			continue
		}
		var std request
		if err := json.Unmarshal([]byte(c.body), &std); err != nil || !reflect.DeepEqual(got, std) {
			t.Errorf("%s: encoding/json disagrees: %v %s", c.name, err, dumpRequest(std))
		}
	}
}

func mustStdB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dumpRequest shows a request with its pointers followed.
func dumpRequest(r request) string {
	b, _ := json.Marshal(r)
	return string(b)
}

func TestDecodeJSONErrors(t *testing.T) {
	deep := `{"x":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`
	cases := []struct {
		name string
		body string
		want string // "syntax", "type" or "base64"
	}{
		{"empty", ``, "syntax"},
		{"only space", " \n", "syntax"},
		{"truncated object", `{"plaintext":"AQ=="`, "syntax"},
		{"truncated string", `{"plaintext":"AQ`, "syntax"},
		{"truncated key", `{"plain`, "syntax"},
		{"truncated escape", `{"a":"\`, "syntax"},
		{"truncated literal", `{"a":nul`, "syntax"},
		{"truncated number", `{"a":-`, "syntax"},
		{"trailing garbage", `{} x`, "syntax"},
		{"two objects", `{}{}`, "syntax"},
		{"trailing comma", `{"a":1,}`, "syntax"},
		{"trailing comma in array", `{"a":[1,]}`, "syntax"},
		{"missing colon", `{"a" 1}`, "syntax"},
		{"missing comma", `{"a":1 "b":2}`, "syntax"},
		{"unquoted key", `{a:1}`, "syntax"},
		{"single quotes", `{'a':1}`, "syntax"},
		{"bad escape", `{"requestMetadata":{"kmsRequestId":"\x"}}`, "syntax"},
		{"bad unicode escape", `{"requestMetadata":{"kmsRequestId":"\u12G4"}}`, "syntax"},
		{"lower-case non-hex in unicode escape", `{"a":"\u00eg"}`, "syntax"},
		{"short unicode escape", `{"a":"\u12"}`, "syntax"},
		{"control character", "{\"requestMetadata\":{\"kmsRequestId\":\"a\nb\"}}", "syntax"},
		{"tab in a key", "{\"a\tb\":1}", "syntax"},
		{"leading zero", `{"a":01}`, "syntax"},
		{"bare fraction", `{"a":1.}`, "syntax"},
		{"bare exponent", `{"a":1e}`, "syntax"},
		{"plus sign", `{"a":+1}`, "syntax"},
		{"bad literal", `{"a":tru}`, "syntax"},
		{"capital literal", `{"a":True}`, "syntax"},
		{"byte order mark", "\ufeff{}", "syntax"},
		{"depth bomb", `{"x":` + strings.Repeat("[", 100000), "syntax"},
		{"65 levels", deep, "syntax"},
		{"syntax error wins over an earlier type error", `{"plaintext":5,"a":}`, "syntax"},
		{"top-level array", `[]`, "type"},
		{"top-level string", `"x"`, "type"},
		{"top-level number", `1`, "type"},
		{"number for base64", `{"plaintext":5}`, "type"},
		{"object for base64", `{"plaintext":{}}`, "type"},
		{"bool for base64", `{"ciphertext":true}`, "type"},
		{"number for string", `{"encryptionAlgorithm":1}`, "type"},
		{"array for string", `{"encryptionAlgorithm":["AES_GCM"]}`, "type"},
		{"string for requestMetadata", `{"requestMetadata":"x"}`, "type"},
		{"array for requestMetadata", `{"requestMetadata":[]}`, "type"},
		{"object for a metadata string", `{"requestMetadata":{"kmsKeyArn":{}}}`, "type"},
		{"bool for a metadata string", `{"requestMetadata":{"kmsRequestId":false}}`, "type"},
		{"byte array (encoding/json takes it)", `{"plaintext":[0,255,7]}`, "type"},
		{"empty byte array", `{"ciphertext":[]}`, "type"},
		{"byte array after a valid duplicate", `{"plaintext":"AQID","plaintext":[null,9]}`, "type"},
		{"byte array before bad base64", `{"plaintext":[1],"ciphertext":"!!"}`, "type"},
		{"syntax error wins over a byte array", `{"plaintext":[1],"a":}`, "syntax"},
		{"bad base64", `{"plaintext":"!!"}`, "base64"},
		{"base64 without padding", `{"plaintext":"AQ"}`, "base64"},
		{"URL-safe base64", `{"plaintext":"-_8="}`, "base64"},
		{"first error wins", `{"plaintext":"!!","ciphertext":5}`, "base64"},
	}
	for _, c := range cases {
		var req request
		err := decodeJSON([]byte(c.body), &req)
		var syntax *jsonError
		var typeErr *jsonTypeError
		var b64Err base64.CorruptInputError
		got := "nil"
		switch {
		case errors.As(err, &syntax):
			got = "syntax"
		case errors.As(err, &typeErr):
			got = "type"
		case errors.As(err, &b64Err):
			got = "base64"
		case err != nil:
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("%s: got %s error (%v), want %s", c.name, got, err, c.want)
			continue
		}
		stdErr := json.Unmarshal([]byte(c.body), new(request))
		if stdErr == nil && c.body != deep && !hasByteArray([]byte(c.body)) {
			t.Errorf("%s: encoding/json accepts it", c.name)
		}
		var stdSyntax *json.SyntaxError
		if syntax != nil && errors.As(stdErr, &stdSyntax) && syntax.offset != stdSyntax.Offset && !strings.Contains(c.name, "depth") {
			t.Errorf("%s: error at byte %d, encoding/json says %d", c.name, syntax.offset, stdSyntax.Offset)
		}
		if strings.Contains(err.Error(), "AQ") || strings.Contains(err.Error(), "!!") {
			t.Errorf("%s: error %q quotes the body", c.name, err)
		}
	}
}

func TestDecodeJSONErrorText(t *testing.T) {
	for body, want := range map[string]string{
		`{"a":tru}`:                                      "syntax error at byte 9: invalid literal",
		`{"plaintext":"AQ==`:                             "syntax error at byte 18: unexpected end of input",
		`{"requestMetadata":{"kmsKeyArn":1}}`:            "field requestMetadata.kmsKeyArn must be a string",
		`{"encryptionAlgorithm":{}}`:                     "field encryptionAlgorithm must be a string",
		`{"initializationVector":true}`:                  "field initializationVector must be a base64 string",
		`{"aad":"QUJD","plaintext":"SGVsbG8gV29ybGQh*"}`: "field plaintext is not valid base64 (standard alphabet, padded): character 16 of its value",
		`[]`:                                    "the request body must be a JSON object",
		`{"x":` + strings.Repeat("[", 70) + `}`: "syntax error at byte 69: nested deeper than 64 levels",
	} {
		if err := decodeJSON([]byte(body), new(request)); err == nil || err.Error() != want {
			t.Errorf("%.40s: error %v, want %q", body, err, want)
		}
	}
}

// The HSM reads the decoded fields after fasthttp reuses the body's buffer.
func TestDecodeJSONDoesNotAliasBody(t *testing.T) {
	body := []byte(xksDecryptBody)
	var req request
	if err := decodeJSON(body, &req); err != nil {
		t.Fatal(err)
	}
	want := dumpRequest(req)
	for i := range body {
		body[i] = 'A'
	}
	if got := dumpRequest(req); got != want {
		t.Fatalf("overwriting the body changed the request:\n%s\n%s", got, want)
	}
}

// foldedKeyOrDepth walks a well-formed body, reporting whether some key is a
// known name under case folding without being it (where encoding/json and
// decodeJSON part on purpose) and how deeply it nests.
// hasByteArray reports whether body, which encoding/json accepts, gives a
// top-level binary field an array, which encoding/json takes as bytes and
// decodeJSON refuses.
func hasByteArray(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	binary := map[string]bool{"plaintext": true, "additionalAuthenticatedData": true, "ciphertext": true,
		"ciphertextMetadata": true, "initializationVector": true, "authenticationTag": true}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return false
		}
		var value json.RawMessage
		if dec.Decode(&value) != nil {
			return false
		}
		if binary[key.(string)] && value[0] == '[' {
			return true
		}
	}
	return false
}

func foldedKeyOrDepth(body []byte) (folded bool, depth int) {
	names := []string{"requestMetadata", "plaintext", "encryptionAlgorithm", "additionalAuthenticatedData", "ciphertextDataIntegrityValueAlgorithm",
		"ciphertext", "ciphertextMetadata", "initializationVector", "authenticationTag",
		"awsPrincipalArn", "awsSourceVpc", "awsSourceVpce", "kmsKeyArn", "kmsOperation", "kmsRequestId", "kmsViaService"}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		panic("foldedKeyOrDepth needs a body encoding/json accepts")
	}
	var walk func(v any, level int)
	walk = func(v any, level int) {
		switch v := v.(type) {
		case map[string]any:
			depth = max(depth, level)
			for k, e := range v {
				for _, n := range names {
					folded = folded || k != n && strings.EqualFold(k, n)
				}
				walk(e, level+1)
			}
		case []any:
			depth = max(depth, level)
			for _, e := range v {
				walk(e, level+1)
			}
		}
	}
	walk(v, 1)
	return folded, depth
}

// bracketDepth is how deeply the brackets outside strings nest, even in a
// malformed body, to tell when decodeJSON's depth limit may come first.
func bracketDepth(body []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range body {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

func FuzzDecodeJSONMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{
		xksEncryptBody, xksDecryptBody, xksMetadataBody, xksHealthBody, xksCDIVBody,
		`{"requestMetadata":{"kmsRequestId":"\ud83d\ude00\u00e9\ud800x"},"plaintext":"AQ\u003d\u003d","encryptionAlgorithm":null}`,
		`{"plaintext":[1,2,null],"plaintext":[3],"ciphertext":[]}`, `{"plaintext":[1],"ciphertext":"!!"}`,
		`{"requestMetadata":{"kmsKeyArn":"a"},"requestMetadata":{"kmsOperation":"b"},"x":[{"y":[true,false,null,-0.5e3]}]}`,
		`{"Plaintext":"AQ==","requestMetadata":{"KMSKEYARN":"k"}}`,
		`{"encryptionAlgorithm":"AES_GCM","encryptionAlgorithm":null,"requestMetadata":{"kmsKeyArn":"k","kmsKeyArn":null},"requestMetadata":null}`,
		`{"plaintext":"AQIDBA==","plaintext":[null,5],"ciphertext":[1,2],"ciphertext":[null,null,null]}`,
		`{"plaintext":"AQ==", "plaintext":5}`, `{"plaintext":"A"}`, `[]`, `null`, `{"a":[[[[]]]]}`, "{\"a\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		decodeMetadata(body, &request{}) // any body, without a panic
		var want request
		wantErr := json.Unmarshal(body, &want)
		mine := bytes.Clone(body)
		var got request
		gotErr := decodeJSON(mine, &got)
		for i := range mine {
			mine[i] = '/' // a valid base64 byte, so aliasing shows in the comparison
		}
		deep := bracketDepth(body) > maxJSONDepth

		var stdSyntax *json.SyntaxError
		var syntax *jsonError
		if errors.As(wantErr, &stdSyntax) {
			if !errors.As(gotErr, &syntax) {
				t.Fatalf("encoding/json: %v; decodeJSON: %v", wantErr, gotErr)
			}
			if syntax.offset != stdSyntax.Offset && !deep {
				t.Fatalf("syntax error at %d, encoding/json says %d (%v)", syntax.offset, stdSyntax.Offset, wantErr)
			}
			return
		}
		// body is well-formed JSON.
		folded, depth := foldedKeyOrDepth(body)
		if folded {
			return
		}
		if depth > maxJSONDepth {
			if !errors.As(gotErr, &syntax) {
				t.Fatalf("nesting %d deep decoded with %v", depth, gotErr)
			}
			return
		}
		var stdType *json.UnmarshalTypeError
		var stdB64 base64.CorruptInputError
		var typeErr *jsonTypeError
		switch {
		case hasByteArray(body):
			// Refused as the specification's types require; which of
			// several errors comes first may differ from encoding/json.
			if !errors.As(gotErr, &typeErr) && !errors.As(gotErr, &stdB64) {
				t.Fatalf("a byte array for a binary field: decodeJSON: %v", gotErr)
			}
		case wantErr == nil:
			if gotErr != nil {
				t.Fatalf("encoding/json accepts it; decodeJSON: %v", gotErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded differently:\n got %s\nwant %s", dumpRequest(got), dumpRequest(want))
			}
			var forLog request
			decodeMetadata(body, &forLog)
			if !reflect.DeepEqual(forLog.RequestMetadata, got.RequestMetadata) {
				t.Fatalf("decodeMetadata disagrees on requestMetadata:\n got %s\nwant %s", dumpRequest(forLog), dumpRequest(got))
			}
		case errors.As(wantErr, &stdType):
			if !errors.As(gotErr, &typeErr) {
				t.Fatalf("encoding/json: %v; decodeJSON: %v", wantErr, gotErr)
			}
		case errors.As(wantErr, &stdB64):
			var gotB64 base64.CorruptInputError
			if !errors.As(gotErr, &gotB64) || gotB64 != stdB64 {
				t.Fatalf("encoding/json: %v; decodeJSON: %v", wantErr, gotErr)
			}
		default:
			t.Fatalf("encoding/json failed unexpectedly: %v", wantErr)
		}
	})
}

func benchmarkDecode(b *testing.B, decode func([]byte, *request) error) {
	body := []byte(xksEncryptBody)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	var req request
	for b.Loop() {
		req = request{}
		if err := decode(body, &req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeJSON and BenchmarkDecodeEncodingJSON decode a typical
// Encrypt body: 32 bytes of plaintext, 64 of AAD.
func BenchmarkDecodeJSON(b *testing.B) { benchmarkDecode(b, decodeJSON) }

func BenchmarkDecodeEncodingJSON(b *testing.B) {
	benchmarkDecode(b, func(body []byte, req *request) error { return json.Unmarshal(body, req) })
}

// decodeMetadata takes what a log line needs and leaves the binary fields
// alone, even when they are not valid base64.
func TestDecodeMetadata(t *testing.T) {
	var req request
	decodeMetadata([]byte(`{"plaintext":"not base64!","requestMetadata":{"kmsRequestId":"r1","awsPrincipalArn":"p"},"encryptionAlgorithm":"AES_GCM","ciphertext":[1,2]}`), &req)
	if req.RequestMetadata == nil || req.RequestMetadata.KMSRequestID != "r1" || req.RequestMetadata.AWSPrincipalARN != "p" {
		t.Fatalf("metadata not decoded: %+v", req.RequestMetadata)
	}
	if req.Plaintext != nil || req.Ciphertext != nil {
		t.Fatalf("binary fields decoded: %q %q", req.Plaintext, req.Ciphertext)
	}
	if req.EncryptionAlgorithm == nil || *req.EncryptionAlgorithm != "AES_GCM" {
		t.Fatalf("encryptionAlgorithm = %v", req.EncryptionAlgorithm)
	}
	var partial request
	decodeMetadata([]byte(`{"requestMetadata":{"kmsRequestId":"r2"},"plaintext":`), &partial)
	if partial.RequestMetadata == nil || partial.RequestMetadata.KMSRequestID != "r2" {
		t.Fatalf("a truncated body loses what came before the break: %+v", partial.RequestMetadata)
	}
	// Neither of these is an object; neither may panic.
	decodeMetadata([]byte(`[1,2]`), &partial)
	decodeMetadata(nil, &partial)
}
