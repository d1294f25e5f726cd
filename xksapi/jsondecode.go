package xksapi

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds how deeply arrays and objects may nest, the top-level
// object counting as one. XKS bodies nest two deep; the bound only stops an
// unknown field from making the decoder recurse without limit.
// encoding/json allows 10000.
const maxJSONDepth = 64

// jsonError is a body that is not well-formed JSON. Its text holds only an
// offset and a fixed description, never body content, so it may be quoted to
// the client.
type jsonError struct {
	offset int64 // bytes read when the problem was found, counted as encoding/json's SyntaxError.Offset counts them
	what   string
}

func (e *jsonError) Error() string {
	return "syntax error at byte " + strconv.FormatInt(e.offset, 10) + ": " + e.what
}

// jsonTypeError is well-formed JSON whose value for a known field is of the
// wrong kind, or a body whose top-level value is not an object. Like
// jsonError it never quotes content.
type jsonTypeError struct {
	field string // as in the body, "requestMetadata." before a metadata field; "" for the body itself
	want  string
}

func (e *jsonTypeError) Error() string {
	if e.field == "" {
		return "the request body must be " + e.want
	}
	return "field " + e.field + " must be " + e.want
}

// jsonBase64Error is a binary field whose string is not standard base64
// (with padding). It wraps the base64 error, as encoding/json reports it.
type jsonBase64Error struct {
	field string
	err   base64.CorruptInputError
}

func (e *jsonBase64Error) Error() string {
	return "field " + e.field + " is not valid base64 (standard alphabet, padded): character " +
		strconv.FormatInt(int64(e.err), 10) + " of its value"
}

func (e *jsonBase64Error) Unwrap() error { return e.err }

// decodeJSON is json.Unmarshal(body, req) without reflection: it fills req
// exactly as encoding/json would, for every body, with these exceptions:
//
//   - Keys match exactly. encoding/json also takes a key equal to a field's
//     name under Unicode case folding ("PlainText", "kmsKeyARN"); the XKS
//     specification spells its fields exactly, and honouring look-alikes
//     only lets two spellings of one field disagree.
//   - Arrays and objects nested deeper than maxJSONDepth are refused.
//   - A binary field takes a base64 string or null, as the specification
//     defines it. encoding/json also takes an array of integers 0..255 for
//     any []byte; no XKS client sends one, and accepting it would let a
//     field have two spellings.
//   - After an error req may hold part of the body. encoding/json checks the
//     whole body before storing anything, so a malformed body leaves req
//     untouched there.
//
// Everything else is encoding/json's behaviour, kept because clients see it:
// a duplicate key's last value wins, but a second requestMetadata object is
// merged into the first; null clears a []byte or *string field and leaves a
// metadata string as it was; "" for a []byte field is an empty non-nil
// slice; base64 is decoded after unescaping, so it may be escaped and may
// hold \r and \n; invalid UTF-8 and lone surrogates in strings become
// U+FFFD; a top-level null is a no-op. A syntax error is reported in
// preference to any type or base64 error, and otherwise the first of those
// is, as encoding/json does; a syntax error's offset is the one
// encoding/json would give.
//
// Binary fields are decoded into fresh slices, never aliasing body, because
// the HSM call reads them after fasthttp has recycled the request.
func decodeJSON(body []byte, req *request) error {
	d := decoder{data: body}
	d.skipSpace()
	var err error
	switch d.peek() {
	case '{':
		err = d.request(req)
	case 'n':
		err = d.literal("null")
	default:
		err = d.wrongType("", "a JSON object")
	}
	if err != nil {
		return err
	}
	d.skipSpace()
	if d.off < len(d.data) {
		return d.syntax("data after the top-level value")
	}
	return d.saved
}

// decodeMetadata fills req from body for a log line only: the request
// metadata and the algorithm names, with the binary fields skipped, not
// decoded. It is for requests refused before their body was decoded, whose
// kmsRequestId and principal the log must still show; what a malformed body
// holds before its first error is kept, and the error is not reported.
func decodeMetadata(body []byte, req *request) {
	d := decoder{data: body, metadataOnly: true}
	d.skipSpace()
	if d.peek() == '{' {
		d.request(req)
	}
}

// decoder reads one body front to back; it lives on decodeJSON's stack.
type decoder struct {
	data         []byte
	off          int
	depth        int
	saved        error  // first type or base64 error, returned only if the body is well-formed
	scratch      []byte // the value of the string last unescaped
	metadataOnly bool   // skip binary fields (decodeMetadata)
}

// syntax reports a problem with the byte at d.off, or the end of the body.
func (d *decoder) syntax(what string) error {
	if d.off >= len(d.data) {
		return &jsonError{offset: int64(len(d.data)), what: "unexpected end of input"}
	}
	return &jsonError{offset: int64(d.off) + 1, what: what}
}

func (d *decoder) peek() byte {
	if d.off < len(d.data) {
		return d.data[d.off]
	}
	return 0
}

func (d *decoder) skipSpace() {
	for d.off < len(d.data) {
		switch d.data[d.off] {
		case ' ', '\t', '\n', '\r':
			d.off++
		default:
			return
		}
	}
}

// wrongType skips a value a known field cannot hold, so that a syntax error
// later in the body still takes precedence, and remembers the type error.
func (d *decoder) wrongType(field, want string) error {
	if err := d.skipValue(); err != nil {
		return err
	}
	if d.saved == nil {
		d.saved = &jsonTypeError{field: field, want: want}
	}
	return nil
}

// open consumes the '[' or '{' at d.off.
func (d *decoder) open() error {
	if d.depth == maxJSONDepth {
		return d.syntax("nested deeper than " + strconv.Itoa(maxJSONDepth) + " levels")
	}
	d.depth++
	d.off++
	return nil
}

// nextKey is called after an object's '{' (first) or after one of its
// members. It consumes the separator, the key and the colon, and returns
// the key unescaped; more is false once the closing brace is consumed.
func (d *decoder) nextKey(first bool) (key []byte, more bool, err error) {
	d.skipSpace()
	switch c := d.peek(); {
	case c == '}':
		d.off++
		d.depth--
		return nil, false, nil
	case first:
	case c == ',':
		d.off++
		d.skipSpace()
	default:
		return nil, false, d.syntax("expected ',' or '}' after an object member")
	}
	if d.peek() != '"' {
		return nil, false, d.syntax("expected a string as object key")
	}
	raw, plain, err := d.str()
	if err != nil {
		return nil, false, err
	}
	if !plain {
		raw = d.unescape(raw)
	}
	d.skipSpace()
	if d.peek() != ':' {
		return nil, false, d.syntax("expected ':' after an object key")
	}
	d.off++
	d.skipSpace()
	return raw, true, nil
}

func (d *decoder) request(req *request) error {
	if err := d.open(); err != nil {
		return err
	}
	for first := true; ; first = false {
		key, more, err := d.nextKey(first)
		if !more {
			return err
		}
		switch string(key) {
		case "requestMetadata":
			switch d.peek() {
			case '{':
				// encoding/json decodes a repeated requestMetadata
				// into the struct the first one made.
				if req.RequestMetadata == nil {
					req.RequestMetadata = new(RequestMetadata)
				}
				err = d.metadata(req.RequestMetadata)
			case 'n':
				if err = d.literal("null"); err == nil {
					req.RequestMetadata = nil
				}
			default:
				err = d.wrongType("requestMetadata", "an object")
			}
		case "plaintext":
			err = d.binary(&req.Plaintext, "plaintext")
		case "encryptionAlgorithm":
			err = d.optionalString(&req.EncryptionAlgorithm, "encryptionAlgorithm")
		case "additionalAuthenticatedData":
			err = d.binary(&req.AAD, "additionalAuthenticatedData")
		case "ciphertextDataIntegrityValueAlgorithm":
			err = d.optionalString(&req.CDIVAlgorithm, "ciphertextDataIntegrityValueAlgorithm")
		case "ciphertext":
			err = d.binary(&req.Ciphertext, "ciphertext")
		case "ciphertextMetadata":
			err = d.binary(&req.CiphertextMetadata, "ciphertextMetadata")
		case "initializationVector":
			err = d.binary(&req.InitializationVector, "initializationVector")
		case "authenticationTag":
			err = d.binary(&req.AuthenticationTag, "authenticationTag")
		default:
			err = d.skipValue()
		}
		if err != nil {
			return err
		}
	}
}

// metadataKeys are requestMetadata's keys, in the order of
// metadataFields.
var metadataKeys = [...]string{"awsPrincipalArn", "awsSourceVpc", "awsSourceVpce", "kmsKeyArn", "kmsOperation", "kmsRequestId", "kmsViaService"}

func metadataFields(md *RequestMetadata) [len(metadataKeys)]*string {
	return [...]*string{&md.AWSPrincipalARN, &md.AWSSourceVPC, &md.AWSSourceVPCE, &md.KMSKeyARN, &md.KMSOperation, &md.KMSRequestID, &md.KMSViaService}
}

// metadata decodes a requestMetadata object into md. Its strings share one
// allocation: their text is noted while reading and copied out together at
// the closing brace. null leaves a field as it was, because encoding/json
// ignores null for a non-pointer string.
func (d *decoder) metadata(md *RequestMetadata) error {
	if err := d.open(); err != nil {
		return err
	}
	var values [len(metadataKeys)]struct {
		raw        []byte
		plain, set bool
	}
	for first := true; ; first = false {
		key, more, err := d.nextKey(first)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		i := 0
		for i < len(metadataKeys) && string(key) != metadataKeys[i] {
			i++
		}
		switch c := d.peek(); {
		case i == len(metadataKeys):
			err = d.skipValue()
		case c == '"':
			v := &values[i]
			v.raw, v.plain, err = d.str()
			v.set = true
		case c == 'n':
			err = d.literal("null")
		default:
			err = d.wrongType("requestMetadata."+metadataKeys[i], "a string")
		}
		if err != nil {
			return err
		}
	}
	size := 0
	for _, v := range values {
		size += len(v.raw)
	}
	var text strings.Builder
	text.Grow(size)
	var ends [len(values)]int
	for i, v := range values {
		switch {
		case v.plain:
			text.Write(v.raw)
		case v.set:
			text.Write(d.unescape(v.raw))
		}
		ends[i] = text.Len()
	}
	all, start := text.String(), 0
	for i, field := range metadataFields(md) {
		if values[i].set {
			*field = all[start:ends[i]]
		}
		start = ends[i]
	}
	return nil
}

// optionalString stores a string, writing through a pointer a duplicate key
// already set as encoding/json does; null makes the field nil.
func (d *decoder) optionalString(dst **string, field string) error {
	switch d.peek() {
	case '"':
		raw, plain, err := d.str()
		if err != nil {
			return err
		}
		if !plain {
			raw = d.unescape(raw)
		}
		var s string
		switch string(raw) {
		// KMS sends these; sharing the constants saves an allocation.
		case algorithmAESGCM:
			s = algorithmAESGCM
		case cdivSHA256:
			s = cdivSHA256
		default:
			s = string(raw)
		}
		if *dst != nil {
			**dst = s
		} else {
			*dst = &s
		}
		return nil
	case 'n':
		err := d.literal("null")
		if err == nil {
			*dst = nil
		}
		return err
	default:
		return d.wrongType(field, "a string")
	}
}

// binary stores a base64 string's bytes, decoded straight from the body when
// it holds no escapes.
func (d *decoder) binary(dst *[]byte, field string) error {
	if d.metadataOnly {
		return d.skipValue()
	}
	switch d.peek() {
	case '"':
		raw, plain, err := d.str()
		if err != nil {
			return err
		}
		if !plain {
			raw = d.unescape(raw)
		}
		b := make([]byte, base64.StdEncoding.DecodedLen(len(raw)))
		n, err := base64.StdEncoding.Decode(b, raw)
		if err != nil {
			var at base64.CorruptInputError
			if d.saved == nil && errors.As(err, &at) {
				d.saved = &jsonBase64Error{field: field, err: at}
			} else if d.saved == nil {
				d.saved = err
			}
			return nil
		}
		*dst = b[:n]
		return nil
	case 'n':
		err := d.literal("null")
		if err == nil {
			*dst = nil
		}
		return err
	default:
		return d.wrongType(field, "a base64 string")
	}
}

// skipValue checks and skips a value no field takes.
func (d *decoder) skipValue() error {
	switch c := d.peek(); {
	case c == '{':
		if err := d.open(); err != nil {
			return err
		}
		for first := true; ; first = false {
			_, more, err := d.nextKey(first)
			if !more {
				return err
			}
			if err := d.skipValue(); err != nil {
				return err
			}
		}
	case c == '[':
		if err := d.open(); err != nil {
			return err
		}
		d.skipSpace()
		if d.peek() == ']' {
			d.off++
			d.depth--
			return nil
		}
		for {
			if err := d.skipValue(); err != nil {
				return err
			}
			d.skipSpace()
			switch d.peek() {
			case ',':
				d.off++
				d.skipSpace()
			case ']':
				d.off++
				d.depth--
				return nil
			default:
				return d.syntax("expected ',' or ']' after an array element")
			}
		}
	case c == '"':
		_, _, err := d.str()
		return err
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return d.number()
	default:
		return d.syntax("expected a value")
	}
}

func (d *decoder) literal(lit string) error {
	for i := 0; i < len(lit); i++ {
		if d.peek() != lit[i] {
			return d.syntax("invalid literal")
		}
		d.off++
	}
	return nil
}

// number checks and skips a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) number() error {
	if d.peek() == '-' {
		d.off++
	}
	switch c := d.peek(); {
	case c == '0':
		d.off++
	case '1' <= c && c <= '9':
		d.digits()
	default:
		return d.syntax("invalid number")
	}
	if d.peek() == '.' {
		d.off++
		if !isDigit(d.peek()) {
			return d.syntax("invalid number")
		}
		d.digits()
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.off++
		if c := d.peek(); c == '+' || c == '-' {
			d.off++
		}
		if !isDigit(d.peek()) {
			return d.syntax("invalid number")
		}
		d.digits()
	}
	return nil
}

func (d *decoder) digits() {
	for isDigit(d.peek()) {
		d.off++
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// plainByte marks the bytes a string may hold that stand for themselves in
// any context: printable ASCII other than '"' and '\\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainWord reports whether the eight bytes packed in x are all plain. For
// bytes below 0x80, (v-lsb*n)&^v&msb is non-zero exactly when some byte of v
// is below n; the final "| x" catches bytes from 0x80 up.
func plainWord(x uint64) bool {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	quote, backslash := x^(lsb*'"'), x^(lsb*'\\')
	return ((x-lsb*0x20)&^x|(quote-lsb)&^quote|(backslash-lsb)&^backslash|x)&msb == 0
}

// str checks and skips the string at d.off and returns the bytes between
// its quotes. plain reports that they are printable ASCII without escapes,
// so they are the string's value as they stand; otherwise the caller must
// unescape them.
func (d *decoder) str() (raw []byte, plain bool, err error) {
	data := d.data
	start := d.off + 1
	i := start
	// Base64 and ARNs are long runs of plain bytes: look at eight at once.
	for i+8 <= len(data) && plainWord(binary.LittleEndian.Uint64(data[i:])) {
		i += 8
	}
	for i < len(data) && plainByte[data[i]] {
		i++
	}
	if i < len(data) && data[i] == '"' {
		d.off = i + 1
		return data[start:i], true, nil
	}
	for i < len(data) {
		switch c := data[i]; {
		case c == '"':
			d.off = i + 1
			return data[start:i], false, nil
		case c < 0x20:
			d.off = i
			return nil, false, d.syntax("control character in string")
		case c != '\\':
			i++
		case i+1 == len(data):
			i++ // a final backslash: report the end of input
		default:
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				i += 2
				for end := i + 4; i < end; i++ {
					if i == len(data) || unhex(data[i]) < 0 {
						d.off = i
						return nil, false, d.syntax("invalid \\u escape in string")
					}
				}
			default:
				d.off = i + 1
				return nil, false, d.syntax("invalid escape in string")
			}
		}
	}
	d.off = i
	return nil, false, d.syntax("unterminated string")
}

func unhex(c byte) rune {
	switch {
	case '0' <= c && c <= '9':
		return rune(c - '0')
	case 'a' <= c && c <= 'f':
		return rune(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// u4 reads the four hex digits of a \u escape that str has checked.
func u4(b []byte) rune {
	return unhex(b[0])<<12 | unhex(b[1])<<8 | unhex(b[2])<<4 | unhex(b[3])
}

// unescape returns the value of a string str has checked, in d.scratch,
// replacing invalid UTF-8 and unpaired surrogates with U+FFFD one for one
// as encoding/json does.
func (d *decoder) unescape(raw []byte) []byte {
	out := d.scratch[:0]
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\\':
			switch raw[i+1] {
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r := u4(raw[i+2:])
				i += 6
				if utf16.IsSurrogate(r) {
					// Only a high surrogate escaped right before a
					// low one makes a character.
					pair := utf8.RuneError
					if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						pair = utf16.DecodeRune(r, u4(raw[i+2:]))
					}
					if pair != utf8.RuneError {
						i += 6
					}
					r = pair
				}
				out = utf8.AppendRune(out, r)
				continue
			default: // '"', '\\' or '/'
				out = append(out, raw[i+1])
			}
			i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, r)
			} else {
				out = append(out, raw[i:i+size]...)
			}
			i += size
		}
	}
	d.scratch = out
	return out
}
