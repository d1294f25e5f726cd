package softhsm

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// ImportAESKey puts a known AES key into token tokenLabel under label with
// OpenSC's pkcs11-tool, as an operator moves an existing key into an HSM: a
// sensitive token key permitted encrypt and decrypt. It exists for tests
// and demonstrations of keys made elsewhere (a migration from another
// proxy); env is added to pkcs11-tool's environment, for example
// SOFTHSM2_CONF=... to reach another process's tokens. The PIN is on
// pkcs11-tool's command line: use it with test PINs only.
func ImportAESKey(module, tokenLabel, pin, label string, key []byte, env ...string) error {
	switch len(key) {
	case 16, 24, 32:
	default:
		return fmt.Errorf("an AES key is 16, 24 or 32 bytes, not %d", len(key))
	}
	f, err := os.CreateTemp("", "aes-key-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(key)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	slot, err := slotOfToken(module, tokenLabel, env)
	if err != nil {
		return err
	}
	cmd := exec.Command("pkcs11-tool", "--module", module, "--slot", slot, "--login", "--pin", pin,
		"--write-object", f.Name(), "--type", "secrkey", "--key-type", "AES:"+strconv.Itoa(len(key)),
		"--label", label, "--usage-decrypt")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pkcs11-tool --write-object %s: %w\n%s", label, err, out)
	}
	return nil
}

// slotOfToken is the id of the slot whose token is labelled exactly
// tokenLabel. pkcs11-tool's own --token-label takes the first token whose
// label starts with it, which with tokens "t" and "t-2" is either.
func slotOfToken(module, tokenLabel string, env []string) (string, error) {
	cmd := exec.Command("pkcs11-tool", "--module", module, "--list-token-slots")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("pkcs11-tool --list-token-slots: %w\n%s", err, out)
	}
	var slot string
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "Slot "); ok {
			if open, close := strings.Index(rest, "("), strings.Index(rest, ")"); open >= 0 && close > open {
				slot = rest[open+1 : close]
			}
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(name) == "token label" && strings.TrimSpace(value) == tokenLabel && slot != "" {
			return slot, nil
		}
	}
	return "", fmt.Errorf("no slot holds a token labelled %q", tokenLabel)
}
