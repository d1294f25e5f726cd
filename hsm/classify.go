package hsm

import (
	"errors"

	"github.com/miekg/pkcs11"
)

// class says what a failed HSM operation should do next.
type class uint8

const (
	// classOther: not recoverable here; report the error as it is.
	classOther class = iota
	// classFinal: the error already wraps one of this package's sentinels,
	// so it has been decided (and any side effect, such as starting
	// recovery, has happened).
	classFinal
	// classSession: the session is gone or logged out; re-open it (and log
	// in again) and retry the operation once.
	classSession
	// classHandle: the cached key handle is stale; look the label up again
	// and retry once.
	classHandle
	// classDevice: the token or the module is gone. Answer ErrUnavailable
	// and let the monitor re-initialise the module.
	classDevice
	// classSuspect: a failed authentication or a sick HSM look the same
	// (SoftHSMv2 reports a bad GCM tag or a blob that does not unwrap as
	// CKR_GENERAL_ERROR); a probe on the health key decides.
	classSuspect
	// classInput: the request itself was malformed.
	classInput
)

var sentinels = [...]error{ErrBusy, ErrTimeout, ErrInvalidCiphertext, ErrKeyNotFound, ErrKeyExists, ErrUnavailable, ErrInvalidInput, ErrNoClusterKeys}

// classify maps an error from an HSM operation to what to do about it. It
// is a pure function of err.
func classify(err error) class {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return classFinal
		}
	}
	var pe pkcs11.Error
	if !errors.As(err, &pe) {
		return classOther
	}
	switch pe {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_USER_NOT_LOGGED_IN,
		// A session left with an operation in progress is unusable for
		// new work; a fresh session is the cure.
		pkcs11.CKR_OPERATION_ACTIVE:
		return classSession
	case pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID:
		return classHandle
	case pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SLOT_ID_INVALID,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return classDevice
	case pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED,
		pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		// What other HSMs may report for a blob that fails RFC 3394's
		// integrity check (SoftHSMv2 says CKR_GENERAL_ERROR).
		pkcs11.CKR_WRAPPED_KEY_INVALID, pkcs11.CKR_WRAPPED_KEY_LEN_RANGE:
		return classSuspect
	case pkcs11.CKR_DATA_LEN_RANGE, pkcs11.CKR_DATA_INVALID, pkcs11.CKR_ARGUMENTS_BAD,
		pkcs11.CKR_MECHANISM_PARAM_INVALID:
		return classInput
	}
	return classOther
}
