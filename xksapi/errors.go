package xksapi

import (
	"github.com/valyala/bytebufferpool"
	"github.com/valyala/fasthttp"
)

// ErrorName is one of the specification's error names; each has one HTTP status.
type ErrorName string

const (
	ValidationException           ErrorName = "ValidationException"
	InvalidStateException         ErrorName = "InvalidStateException"
	InvalidCiphertextException    ErrorName = "InvalidCiphertextException"
	InvalidKeyUsageException      ErrorName = "InvalidKeyUsageException"
	AuthenticationFailedException ErrorName = "AuthenticationFailedException"
	AccessDeniedException         ErrorName = "AccessDeniedException"
	KeyNotFoundException          ErrorName = "KeyNotFoundException"
	InvalidURIPathException       ErrorName = "InvalidUriPathException"
	ThrottlingException           ErrorName = "ThrottlingException"
	UnsupportedOperationException ErrorName = "UnsupportedOperationException"
	DependencyTimeoutException    ErrorName = "DependencyTimeoutException"
	InternalException             ErrorName = "InternalException"
)

// Status is the HTTP status the specification pairs with the error name.
func (n ErrorName) Status() int {
	switch n {
	case ValidationException, InvalidStateException, InvalidCiphertextException, InvalidKeyUsageException:
		return fasthttp.StatusBadRequest
	case AuthenticationFailedException:
		return fasthttp.StatusUnauthorized
	case AccessDeniedException:
		return fasthttp.StatusForbidden
	case KeyNotFoundException, InvalidURIPathException:
		return fasthttp.StatusNotFound
	case ThrottlingException:
		return fasthttp.StatusTooManyRequests
	case UnsupportedOperationException:
		return fasthttp.StatusNotImplemented
	case DependencyTimeoutException:
		return fasthttp.StatusServiceUnavailable
	default:
		return fasthttp.StatusInternalServerError
	}
}

// apiError is a refusal on its way to the client: the spec's name, a message
// safe to show AWS KMS (it lands in the customer's CloudWatch logs), and an
// optional detail that only goes to our own log.
type apiError struct {
	name    ErrorName
	message string
	detail  string
	status  int        // overrides name.Status(); only 405 Method Not Allowed needs it
	shed    shedReason // the limit behind a ThrottlingException, for metrics
}

func (e *apiError) Error() string { return string(e.name) + ": " + e.message }

func fail(name ErrorName, message string) *apiError {
	return &apiError{name: name, message: message}
}

// throttle is a ThrottlingException that names the limit it comes from.
func throttle(reason shedReason, message string) *apiError {
	return &apiError{name: ThrottlingException, message: message, shed: reason}
}

// maxErrorMessage keeps errorMessage under the specification's 512 characters.
const maxErrorMessage = 511

// appendErrorBody renders {"errorName":...,"errorMessage":...}. The message is
// reduced to printable ASCII because the specification allows nothing else.
func appendErrorBody(dst []byte, name ErrorName, message string) []byte {
	dst = append(dst, `{"errorName":"`...)
	dst = append(dst, name...)
	dst = append(dst, `","errorMessage":"`...)
	n := 0
	for i := 0; i < len(message) && n < maxErrorMessage; i++ {
		c := message[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
			n += 2
		case c < 0x20 || c > 0x7e:
			dst = append(dst, '?')
			n++
		default:
			dst = append(dst, c)
			n++
		}
	}
	return append(dst, `"}`...)
}

func writeError(ctx *fasthttp.RequestCtx, name ErrorName, message string) {
	buf := bytebufferpool.Get()
	buf.B = appendErrorBody(buf.B[:0], name, message)
	writeJSON(ctx, name.Status(), buf.B)
	bytebufferpool.Put(buf)
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(status)
	ctx.SetBody(body)
}
