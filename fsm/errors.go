package fsm

import (
	"errors"
	"fmt"
)

// The kinds of rule violation a command's Validate reports. Every violation
// wraps exactly one of them, so that the admin API can answer 400, 404 or
// 409 with errors.Is across layers while the message stays specific.
var (
	// ErrInvalid: a field is malformed whatever the state (a bad key id,
	// an unknown grants mode, a missing time).
	ErrInvalid = errors.New("invalid command")
	// ErrNotFound: the command names a key store, key, credential, version
	// or grant that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the command is well formed but clashes with the state (a
	// duplicate, a URI path in use, a key store that still has keys).
	ErrConflict = errors.New("conflict with the current state")
	// ErrForbidden: the operator who asked may not make the change (its
	// role does not allow it, or it was revoked).
	ErrForbidden = errors.New("forbidden")
)

// ErrAlreadySeeded is Seed's answer once the state has been seeded. It is a
// conflict, and callers that seed on every leadership change treat it as done.
var ErrAlreadySeeded error = &ruleError{kind: ErrConflict, msg: "the state has already been seeded from a bootstrap configuration"}

// ErrUnknownCommand is Decode's answer to a command type this build does not
// know: a newer node wrote it.
var ErrUnknownCommand = errors.New("unknown command type")

// ruleError carries a specific message and unwraps to its kind. Messages
// name key stores, keys, access key ids and grants, never secrets or
// wrapped material.
type ruleError struct {
	kind error
	msg  string
}

func (e *ruleError) Error() string { return e.msg }
func (e *ruleError) Unwrap() error { return e.kind }

func invalid(format string, a ...any) error {
	return &ruleError{kind: ErrInvalid, msg: fmt.Sprintf(format, a...)}
}

func notFound(format string, a ...any) error {
	return &ruleError{kind: ErrNotFound, msg: fmt.Sprintf(format, a...)}
}

func conflict(format string, a ...any) error {
	return &ruleError{kind: ErrConflict, msg: fmt.Sprintf(format, a...)}
}

func forbidden(format string, a ...any) error {
	return &ruleError{kind: ErrForbidden, msg: fmt.Sprintf(format, a...)}
}

// asInvalid turns a shape check's plain error into an ErrInvalid violation.
func asInvalid(err error) error {
	if err == nil {
		return nil
	}
	return &ruleError{kind: ErrInvalid, msg: err.Error()}
}
