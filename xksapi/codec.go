package xksapi

import (
	"encoding/base64"
	"errors"
	"strconv"
)

// RequestMetadata is the context AWS KMS sends with every call. The proxy
// logs it and authorizes on it; it validates only that the required fields
// are present (kmsRequestId and kmsOperation are opaque by specification).
type RequestMetadata struct {
	AWSPrincipalARN string `json:"awsPrincipalArn"`
	AWSSourceVPC    string `json:"awsSourceVpc"`
	AWSSourceVPCE   string `json:"awsSourceVpce"`
	KMSKeyARN       string `json:"kmsKeyArn"`
	KMSOperation    string `json:"kmsOperation"`
	KMSRequestID    string `json:"kmsRequestId"`
	KMSViaService   string `json:"kmsViaService"`
}

// request is the union of the four operations' bodies. Binary fields are
// base64 in JSON; decodeJSON decodes them into fresh slices, which also
// gives the HSM call inputs that no longer alias the fasthttp request.
type request struct {
	RequestMetadata *RequestMetadata `json:"requestMetadata"`

	Plaintext            []byte  `json:"plaintext"`
	EncryptionAlgorithm  *string `json:"encryptionAlgorithm"`
	AAD                  []byte  `json:"additionalAuthenticatedData"`
	CDIVAlgorithm        *string `json:"ciphertextDataIntegrityValueAlgorithm"`
	Ciphertext           []byte  `json:"ciphertext"`
	CiphertextMetadata   []byte  `json:"ciphertextMetadata"`
	InitializationVector []byte  `json:"initializationVector"`
	AuthenticationTag    []byte  `json:"authenticationTag"`
}

// Limits bound what a request may carry. The specification's minimums are
// the defaults; a value above them is answered with
// UnsupportedOperationException, as the specification asks.
type Limits struct {
	MaxPlaintext int // bytes of plaintext or ciphertext; at least 4300
	MaxAAD       int // bytes of additionalAuthenticatedData; at least 8192
	MaxARN       int // characters of any ARN field; at least 2048
}

// DefaultLimits are the specification's minimum sizes.
var DefaultLimits = Limits{MaxPlaintext: 4300, MaxAAD: 8192, MaxARN: 2048}

// MaxBodyFor is the largest request body these limits can produce, with room
// for metadata and whitespace; it is the HTTP server's body limit.
func (l Limits) MaxBodyFor() int {
	b64 := func(n int) int { return (n + 2) / 3 * 4 }
	return b64(l.MaxPlaintext) + b64(l.MaxAAD) + b64(255) + 4*l.MaxARN + 16<<10
}

const (
	algorithmAESGCM = "AES_GCM"
	cdivSHA256      = "SHA_256"
	maxMetadataLen  = 20
)

// decodeRequest parses and validates a body for op. GetHealthStatus asks
// only for a readable body with a non-empty requestMetadata: the
// specification's error table exempts it from ValidationException, but
// AWS's reference proxy and its conformance tests refuse a health check
// without metadata, and KMS always sends it.
func decodeRequest(body []byte, op Operation, lim Limits, req *request) *apiError {
	if err := decodeJSON(body, req); err != nil {
		return fail(ValidationException, "request body is not a valid "+op.String()+" request: "+jsonProblem(err))
	}
	md := req.RequestMetadata
	if md == nil {
		return fail(ValidationException, "requestMetadata is required")
	}
	if op == OpHealth {
		if *md == (RequestMetadata{}) {
			return fail(ValidationException, "requestMetadata is empty")
		}
		return nil
	}
	switch {
	case md.AWSPrincipalARN == "":
		return fail(ValidationException, "requestMetadata.awsPrincipalArn is required")
	case md.KMSOperation == "":
		return fail(ValidationException, "requestMetadata.kmsOperation is required")
	case md.KMSRequestID == "":
		return fail(ValidationException, "requestMetadata.kmsRequestId is required")
	case md.KMSKeyARN == "" && op != OpMetadata:
		return fail(ValidationException, "requestMetadata.kmsKeyArn is required")
	}
	for _, f := range [...]struct{ name, v string }{
		{"awsPrincipalArn", md.AWSPrincipalARN}, {"kmsKeyArn", md.KMSKeyARN},
		{"awsSourceVpc", md.AWSSourceVPC}, {"awsSourceVpce", md.AWSSourceVPCE},
	} {
		if len(f.v) > lim.MaxARN {
			return fail(UnsupportedOperationException, "requestMetadata."+f.name+" is longer than "+strconv.Itoa(lim.MaxARN)+" characters")
		}
	}
	switch op {
	case OpEncrypt:
		if req.Plaintext == nil {
			return fail(ValidationException, "plaintext is required")
		}
		if len(req.Plaintext) > lim.MaxPlaintext {
			return fail(UnsupportedOperationException, "plaintext is longer than "+strconv.Itoa(lim.MaxPlaintext)+" bytes")
		}
		if req.CDIVAlgorithm != nil && *req.CDIVAlgorithm != cdivSHA256 {
			return fail(UnsupportedOperationException, "ciphertextDataIntegrityValueAlgorithm must be SHA_256")
		}
	case OpDecrypt:
		switch {
		case req.Ciphertext == nil:
			return fail(ValidationException, "ciphertext is required")
		case req.InitializationVector == nil:
			return fail(ValidationException, "initializationVector is required")
		case req.AuthenticationTag == nil:
			return fail(ValidationException, "authenticationTag is required")
		case len(req.Ciphertext) > lim.MaxPlaintext:
			return fail(UnsupportedOperationException, "ciphertext is longer than "+strconv.Itoa(lim.MaxPlaintext)+" bytes")
		case len(req.InitializationVector) != 12 && len(req.InitializationVector) != 16:
			return fail(ValidationException, "initializationVector must be 12 or 16 bytes")
		case len(req.AuthenticationTag) != 16:
			return fail(ValidationException, "authenticationTag must be 16 bytes")
		case len(req.CiphertextMetadata) > maxMetadataLen:
			return fail(ValidationException, "ciphertextMetadata must be at most 20 bytes")
		}
	}
	if op == OpEncrypt || op == OpDecrypt {
		if req.EncryptionAlgorithm == nil {
			return fail(ValidationException, "encryptionAlgorithm is required")
		}
		if *req.EncryptionAlgorithm != algorithmAESGCM {
			return fail(UnsupportedOperationException, "encryptionAlgorithm must be AES_GCM")
		}
		if len(req.AAD) > lim.MaxAAD {
			return fail(UnsupportedOperationException, "additionalAuthenticatedData is longer than "+strconv.Itoa(lim.MaxAAD)+" bytes")
		}
	}
	return nil
}

// jsonProblem describes a decoding failure without echoing request content.
func jsonProblem(err error) string {
	var syntax *jsonError
	var typeErr *jsonTypeError
	var b64 *jsonBase64Error
	switch {
	case errors.As(err, &syntax):
		return syntax.Error()
	case errors.As(err, &typeErr):
		return typeErr.Error()
	case errors.As(err, &b64):
		return b64.Error()
	}
	return "malformed JSON"
}

// Responses are rendered by hand: a handful of fixed keys and base64 values
// need no reflection.

func appendB64Field(dst []byte, name string, v []byte) []byte {
	dst = append(dst, '"')
	dst = append(dst, name...)
	dst = append(dst, `":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, v)
	return append(dst, '"')
}

func appendStringField(dst []byte, name, v string) []byte {
	dst = append(dst, '"')
	dst = append(dst, name...)
	dst = append(dst, `":`...)
	return appendJSONString(dst, v)
}

type encryptResult struct {
	ciphertext, metadata, iv, tag, cdiv []byte
}

func appendEncryptResponse(dst []byte, r *encryptResult) []byte {
	dst = append(dst, '{')
	dst = appendB64Field(dst, "ciphertext", r.ciphertext)
	dst = append(dst, ',')
	if len(r.metadata) > 0 {
		// Empty only in the format of a proxy configured without static
		// metadata, which leaves the field out.
		dst = appendB64Field(dst, "ciphertextMetadata", r.metadata)
		dst = append(dst, ',')
	}
	dst = appendB64Field(dst, "initializationVector", r.iv)
	dst = append(dst, ',')
	dst = appendB64Field(dst, "authenticationTag", r.tag)
	if r.cdiv != nil {
		dst = append(dst, ',')
		dst = appendB64Field(dst, "ciphertextDataIntegrityValue", r.cdiv)
	}
	return append(dst, '}')
}

func appendDecryptResponse(dst, plaintext []byte) []byte {
	dst = append(dst, '{')
	dst = appendB64Field(dst, "plaintext", plaintext)
	return append(dst, '}')
}

func appendMetadataResponse(dst []byte, usage []string, enabled bool) []byte {
	dst = append(dst, `{"keySpec":"AES_256","keyUsage":[`...)
	for i, u := range usage {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, u)
	}
	dst = append(dst, `],"keyStatus":"`...)
	if enabled {
		dst = append(dst, "ENABLED"...)
	} else {
		dst = append(dst, "DISABLED"...)
	}
	return append(dst, `"}`...)
}

// FleetMember is one HSM in a GetHealthStatus answer.
type FleetMember struct {
	ID, Model, Status string
}

// HealthReport is the body of a GetHealthStatus answer.
type HealthReport struct {
	FleetSize int
	Vendor    string
	Model     string
	EKMVendor string
	Fleet     []FleetMember
}

func appendHealthResponse(dst []byte, h *HealthReport) []byte {
	dst = append(dst, `{"xksProxyFleetSize":`...)
	dst = strconv.AppendInt(dst, int64(h.FleetSize), 10)
	dst = append(dst, ',')
	dst = appendStringField(dst, "xksProxyVendor", h.Vendor)
	dst = append(dst, ',')
	dst = appendStringField(dst, "xksProxyModel", h.Model)
	dst = append(dst, ',')
	dst = appendStringField(dst, "ekmVendor", h.EKMVendor)
	dst = append(dst, `,"ekmFleetDetails":[`...)
	for i, m := range h.Fleet {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '{')
		dst = appendStringField(dst, "id", m.ID)
		dst = append(dst, ',')
		dst = appendStringField(dst, "model", m.Model)
		dst = append(dst, ',')
		dst = appendStringField(dst, "healthStatus", m.Status)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
