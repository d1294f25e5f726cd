package softhsm

import (
	"errors"
	"os"
	"path/filepath"
)

// Tokens is a SoftHSMv2 set up by TestTokens.
type Tokens struct {
	Module string // path of the SoftHSMv2 PKCS#11 module
	Dir    string // the temporary directory holding the configuration and the tokens
}

// testSOPIN is every test token's SO PIN; no test logs in as the SO.
const testSOPIN = "so-pin-test-5678"

// TestTokens is the SoftHSMv2 set-up of a test binary's TestMain: a new
// temporary directory (os.MkdirTemp with pattern) with a configuration,
// SOFTHSM2_CONF pointing at it for the whole process, and one token per
// label with user PIN pin. SoftHSMv2 reads SOFTHSM2_CONF at C_Initialize,
// which is per process, so one set-up serves every test of the binary.
// Call Remove once the tests have run.
func TestTokens(pattern, pin string, labels ...string) (*Tokens, error) {
	module, err := ModulePath()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return nil, err
	}
	t := &Tokens{Module: module, Dir: dir}
	if err := t.setUp(pin, labels); err != nil {
		return nil, errors.Join(err, t.Remove())
	}
	return t, nil
}

func (t *Tokens) setUp(pin string, labels []string) error {
	conf, err := WriteConfig(t.Dir)
	if err != nil {
		return err
	}
	if err := os.Setenv(ConfigEnv, conf); err != nil {
		return err
	}
	for _, label := range labels {
		if err := InitToken(t.Module, label, testSOPIN, pin); err != nil {
			return err
		}
	}
	return nil
}

// TokenDir is the directory where SoftHSMv2 keeps one directory per token.
func (t *Tokens) TokenDir() string { return filepath.Join(t.Dir, "tokens") }

// Remove deletes the directory, tokens included.
func (t *Tokens) Remove() error { return os.RemoveAll(t.Dir) }
