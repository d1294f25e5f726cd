package hsm

import (
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
)

func TestClassify(t *testing.T) {
	rv := func(code uint) error { return pkcs11.Error(code) }
	for _, tc := range []struct {
		err  error
		want class
	}{
		{errors.New("something else"), classOther},
		{rv(pkcs11.CKR_KEY_TYPE_INCONSISTENT), classOther},
		{rv(pkcs11.CKR_PIN_INCORRECT), classOther},

		{ErrBusy, classFinal},
		{fmt.Errorf("%w: %w", ErrUnavailable, rv(pkcs11.CKR_GENERAL_ERROR)), classFinal},
		{fmt.Errorf("%w: %q", ErrKeyNotFound, "k"), classFinal},
		{fmt.Errorf("%w: x", ErrInvalidCiphertext), classFinal},
		{fmt.Errorf("%w: no key %q", ErrNoClusterKeys, ClusterKEKLabel), classFinal},

		{rv(pkcs11.CKR_SESSION_HANDLE_INVALID), classSession},
		{rv(pkcs11.CKR_SESSION_CLOSED), classSession},
		{rv(pkcs11.CKR_USER_NOT_LOGGED_IN), classSession},
		{rv(pkcs11.CKR_OPERATION_ACTIVE), classSession},
		{fmt.Errorf("hsm: re-open: %w", rv(pkcs11.CKR_SESSION_HANDLE_INVALID)), classSession},

		{rv(pkcs11.CKR_OBJECT_HANDLE_INVALID), classHandle},
		{rv(pkcs11.CKR_KEY_HANDLE_INVALID), classHandle},

		{rv(pkcs11.CKR_DEVICE_ERROR), classDevice},
		{rv(pkcs11.CKR_DEVICE_MEMORY), classDevice},
		{rv(pkcs11.CKR_DEVICE_REMOVED), classDevice},
		{rv(pkcs11.CKR_TOKEN_NOT_PRESENT), classDevice},
		{rv(pkcs11.CKR_TOKEN_NOT_RECOGNIZED), classDevice},
		{rv(pkcs11.CKR_SLOT_ID_INVALID), classDevice},
		{rv(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED), classDevice},
		// notFound's "token unreadable" error: the first code wins.
		{fmt.Errorf("token unreadable (%w): %w", rv(pkcs11.CKR_TOKEN_NOT_PRESENT), rv(pkcs11.CKR_GENERAL_ERROR)), classDevice},

		{rv(pkcs11.CKR_GENERAL_ERROR), classSuspect},
		{rv(pkcs11.CKR_FUNCTION_FAILED), classSuspect},
		{rv(pkcs11.CKR_ENCRYPTED_DATA_INVALID), classSuspect},
		{rv(pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE), classSuspect},
		{rv(pkcs11.CKR_WRAPPED_KEY_INVALID), classSuspect},
		{rv(pkcs11.CKR_WRAPPED_KEY_LEN_RANGE), classSuspect},

		{rv(pkcs11.CKR_DATA_LEN_RANGE), classInput},
		{rv(pkcs11.CKR_DATA_INVALID), classInput},
		{rv(pkcs11.CKR_ARGUMENTS_BAD), classInput},
		{rv(pkcs11.CKR_MECHANISM_PARAM_INVALID), classInput},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
