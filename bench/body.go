package bench

import (
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/xksproxy/xksproxy/xksclient"
)

// The request bodies are appended by hand rather than marshalled: they are
// the same few shapes every time, and encoding/json's reflection, with the
// answers' decoding, was 6% of the bench's cost per request. They are byte
// for byte what json.Marshal makes of the xksclient request types
// (body_test.go checks it), so the proxy sees what it would see from any
// other client.

// requestHead is the start of an operation's body on a key, up to the
// kmsRequestId value, which is the last field of requestMetadata:
// {"requestMetadata":{...,"kmsOperation":"Encrypt","kmsRequestId":
func requestHead(op Op, principal, keyARN string) []byte {
	b := []byte(`{"requestMetadata":{`)
	if op != OpHealth && principal != "" {
		b = append(b, `"awsPrincipalArn":`...)
		b = appendJSONString(b, principal)
		b = append(b, ',')
	}
	if op == OpEncrypt || op == OpDecrypt {
		b = append(b, `"kmsKeyArn":`...)
		b = appendJSONString(b, keyARN)
		b = append(b, ',')
	}
	b = append(b, `"kmsOperation":`...)
	b = appendJSONString(b, kmsOperation[op])
	return append(b, `,"kmsRequestId":`...)
}

// appendJSONString appends s as encoding/json quotes it (with its HTML
// escaping), once per key and operation, not per request.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// requestID names one request: a prefix of letters, digits and dashes (the
// run id, the key's index), none of which JSON escapes, and its number.
type requestID struct {
	prefix string
	n      int64
}

// appendMetadata appends the head and the request id, closing
// requestMetadata.
func appendMetadata(b, head []byte, id requestID) []byte {
	b = append(b, head...)
	b = append(b, '"')
	b = append(b, id.prefix...)
	b = strconv.AppendInt(b, id.n, 10)
	return append(b, `"}`...)
}

// appendBytesField appends ,"name":value with value in base64 as
// encoding/json writes a []byte: null when nil, and nothing at all when
// omitEmpty and empty.
func appendBytesField(b []byte, name string, v []byte, omitEmpty bool) []byte {
	if omitEmpty && len(v) == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	if v == nil {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// appendEncryptBody appends the rest of an xksclient.EncryptRequest after
// its requestMetadata.
func appendEncryptBody(b, plaintext, aad []byte, cdiv bool) []byte {
	b = appendBytesField(b, "plaintext", plaintext, false)
	b = append(b, `,"encryptionAlgorithm":"AES_GCM"`...)
	b = appendBytesField(b, "additionalAuthenticatedData", aad, true)
	if cdiv {
		b = append(b, `,"ciphertextDataIntegrityValueAlgorithm":"SHA_256"`...)
	}
	return append(b, '}')
}

// appendDecryptBody appends the rest of an xksclient.DecryptRequest for
// sample s after its requestMetadata.
func appendDecryptBody(b []byte, s *sample) []byte {
	b = appendBytesField(b, "ciphertext", s.enc.Ciphertext, false)
	b = appendBytesField(b, "ciphertextMetadata", s.enc.CiphertextMetadata, true)
	b = append(b, `,"encryptionAlgorithm":"AES_GCM"`...)
	b = appendBytesField(b, "additionalAuthenticatedData", s.aad, true)
	b = appendBytesField(b, "initializationVector", s.enc.IV, false)
	b = appendBytesField(b, "authenticationTag", s.enc.Tag, false)
	return append(b, '}')
}

// The answers to encrypts and decrypts, the bulk of the load, are read by
// a fast path that takes the one shape proxies send: a flat object of
// base64 strings under the field names of the specification. Anything
// else — an escape in a string, another field, another type — goes to
// encoding/json, so that what is accepted and what it decodes to are
// exactly encoding/json's (body_test.go checks both paths agree).

// decryptResponse is the body of a successful Decrypt.
type decryptResponse struct {
	Plaintext []byte `json:"plaintext"`
}

// decodeAnswer decodes a 200 answer into out.
func decodeAnswer(data []byte, out any) error {
	var ok bool
	switch o := out.(type) {
	case *xksclient.EncryptResponse:
		ok = decodeEncrypt(data, o)
	case *decryptResponse:
		ok = decodeFlat(data, func(name, value []byte) bool {
			return string(name) == "plaintext" && decodeBase64(value, &o.Plaintext)
		})
	}
	if ok {
		return nil
	}
	return json.Unmarshal(data, out)
}

func decodeEncrypt(data []byte, out *xksclient.EncryptResponse) bool {
	var got xksclient.EncryptResponse
	if !decodeFlat(data, func(name, value []byte) bool {
		var dst *[]byte
		switch string(name) {
		case "ciphertext":
			dst = &got.Ciphertext
		case "ciphertextMetadata":
			dst = &got.CiphertextMetadata
		case "initializationVector":
			dst = &got.IV
		case "authenticationTag":
			dst = &got.Tag
		case "ciphertextDataIntegrityValue":
			dst = &got.CDIV
		default:
			return false
		}
		return decodeBase64(value, dst)
	}) {
		return false
	}
	*out = got
	return true
}

// decodeBase64 decodes a []byte field as encoding/json does.
func decodeBase64(value []byte, dst *[]byte) bool {
	b := make([]byte, base64.StdEncoding.DecodedLen(len(value)))
	n, err := base64.StdEncoding.Decode(b, value)
	if err != nil {
		return false
	}
	*dst = b[:n]
	return true
}

// decodeFlat walks a JSON object whose values are all strings free of
// escapes and control characters, calling field with each name and value
// (the bytes between the quotes). It reports false, having possibly called
// field, for anything else or as soon as field does.
func decodeFlat(data []byte, field func(name, value []byte) bool) bool {
	i := skipSpace(data, 0)
	if i == len(data) || data[i] != '{' {
		return false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return skipSpace(data, i+1) == len(data)
	}
	for {
		name, next, ok := plainString(data, i)
		if !ok {
			return false
		}
		i = skipSpace(data, next)
		if i == len(data) || data[i] != ':' {
			return false
		}
		value, next, ok := plainString(data, skipSpace(data, i+1))
		if !ok || !field(name, value) {
			return false
		}
		i = skipSpace(data, next)
		if i == len(data) {
			return false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return skipSpace(data, i+1) == len(data)
		default:
			return false
		}
	}
}

// plainString reads the string at data[i], which must hold no escape and
// no control character; it returns its content and the index after it.
func plainString(data []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return data[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}
