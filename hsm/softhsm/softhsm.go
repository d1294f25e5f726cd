// Package softhsm sets up SoftHSMv2 tokens for dev mode and tests.
//
// SoftHSMv2 reads the file named by the SOFTHSM2_CONF environment variable
// when the module is initialised (C_Initialize), so set it, for example to
// the path WriteConfig returns, before InitToken or hsm.Open.
package softhsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/miekg/pkcs11"
)

// ConfigEnv is the environment variable SoftHSMv2 reads its configuration
// path from.
const ConfigEnv = "SOFTHSM2_CONF"

// modulePaths are where Debian, Ubuntu and source builds install the module.
var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// ModulePath returns the path of the installed SoftHSMv2 PKCS#11 module.
func ModulePath() (string, error) {
	for _, p := range modulePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("softhsm: libsofthsm2.so not found in %v; install SoftHSMv2 (Debian/Ubuntu: apt-get install softhsm2)", modulePaths)
}

// WriteConfig writes dir/softhsm2.conf keeping tokens in dir/tokens (created
// with mode 0700) with the file object store, and returns its path.
func WriteConfig(dir string) (confPath string, err error) {
	// SoftHSMv2 resolves a relative token directory against its own working
	// directory, which need not be ours.
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("softhsm: %w", err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", fmt.Errorf("softhsm: create token directory: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone.
	if err := os.Chmod(tokens, 0o700); err != nil {
		return "", fmt.Errorf("softhsm: %w", err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return "", fmt.Errorf("softhsm: write config: %w", err)
	}
	return conf, nil
}

// maxLabel is the PKCS#11 token label size.
const maxLabel = 32

// InitToken creates a token labelled label with the given SO and user PINs
// on SoftHSMv2's free slot, through PKCS#11. If a token with that label
// exists already it does nothing (the PINs are not checked).
//
// C_Initialize state is per process. InitToken finalizes the module only if
// it initialised it itself: called before hsm.Open it leaves the module
// uninitialised for Open; called while the module is in use (hsm.Open
// tolerates an initialised module) it leaves the module initialised.
func InitToken(modulePath, label, soPIN, userPIN string) (err error) {
	switch {
	case label == "" || len(label) > maxLabel:
		return fmt.Errorf("softhsm: token label must be 1 to %d bytes", maxLabel)
	case soPIN == "" || userPIN == "":
		return errors.New("softhsm: SO PIN and user PIN are required")
	}
	ctx := pkcs11.New(modulePath)
	if ctx == nil {
		return fmt.Errorf("softhsm: cannot load PKCS#11 module %s", modulePath)
	}
	defer ctx.Destroy()
	switch ierr := ctx.Initialize(); {
	case ierr == nil:
		defer func() {
			if ferr := ctx.Finalize(); ferr != nil && err == nil {
				err = fmt.Errorf("softhsm: finalize: %w", ferr)
			}
		}()
	case !isCode(ierr, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
		return fmt.Errorf("softhsm: initialize module: %w", ierr)
	}
	slot, exists, err := freeSlot(ctx, label)
	if err != nil || exists {
		return err
	}
	if err := ctx.InitToken(slot, soPIN, label); err != nil {
		return fmt.Errorf("softhsm: init token %q: %w", label, err)
	}
	sh, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("softhsm: open session on token %q: %w", label, err)
	}
	// Closing the only session also logs the SO out.
	defer ctx.CloseSession(sh)
	if err := ctx.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("softhsm: SO login to token %q: %w", label, err)
	}
	if err := ctx.InitPIN(sh, userPIN); err != nil {
		return fmt.Errorf("softhsm: set user PIN on token %q: %w", label, err)
	}
	return nil
}

// freeSlot returns the slot of an uninitialised token, or exists=true if a
// token labelled label is there already.
func freeSlot(ctx *pkcs11.Ctx, label string) (slot uint, exists bool, err error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, false, fmt.Errorf("softhsm: list slots: %w", err)
	}
	free, haveFree := uint(0), false
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			if !haveFree {
				free, haveFree = s, true
			}
			continue
		}
		if ti.Label == label {
			return 0, true, nil
		}
	}
	if !haveFree {
		return 0, false, errors.New("softhsm: no free slot (SoftHSMv2 always offers one; is SOFTHSM2_CONF set?)")
	}
	return free, false, nil
}

func isCode(err error, rv uint) bool {
	var pe pkcs11.Error
	return errors.As(err, &pe) && uint(pe) == rv
}
