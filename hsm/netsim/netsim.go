// Package netsim builds and drives a PKCS#11 module that behaves like a
// network HSM: it forwards every call to a real module (SoftHSMv2) and adds a
// latency per cryptographic operation, a cap on operations in flight, and
// faults switched on and off at run time. It is a real C module, loaded
// through the same path as any HSM (hsm.Config.ModulePath, `[hsm] module`),
// for tests and benchmarks. See hsm/DESIGN.md for the model it implements.
//
// The module reads its settings from the file named by ConfigEnv. The file
// is looked at again at most every CheckInterval, on the next call, and
// re-read when it changed: Write it again to switch latency or faults while
// the module is in use.
package netsim

import (
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ConfigEnv names the environment variable the module reads its settings
// file's path from, once, when it is loaded.
const ConfigEnv = "NETSIM_HSM_CONF"

// LibraryName is the module's file name as `make netsim` builds it in bin/.
const LibraryName = "libnetsimhsm.so"

//go:embed csrc/netsim.c csrc/pkcs11.h csrc/pkcs11t.h csrc/pkcs11f.h
var source embed.FS

// Fault is what the module does to the calls it applies to.
type Fault string

const (
	// NoFault forwards every call.
	NoFault Fault = "none"
	// FaultError answers Config.FaultRV without calling the real module.
	FaultError Fault = "error"
	// FaultHang blocks the call until the fault is switched off; the call
	// then runs normally.
	FaultHang Fault = "hang"
	// FaultDrop closes the call's session in the real module and answers
	// CKR_SESSION_HANDLE_INVALID, as when an HSM drops a connection.
	FaultDrop Fault = "drop"
)

// Config is the module's settings file.
type Config struct {
	// Module is the real PKCS#11 module the calls go to, read once at load;
	// "" means /usr/lib/softhsm/libsofthsm2.so.
	Module string
	// Latency is added to every cryptographic operation (encrypt, decrypt,
	// generate, wrap, unwrap, copy, create, destroy, ...; not length
	// queries, not the *Init calls), plus a uniformly random part of up to
	// Jitter. Resolution: microseconds, plus the kernel's sleep overshoot.
	Latency, Jitter time.Duration
	// MaxInFlight caps the operations inside the module at once; callers
	// beyond it queue, their latency starting when they get in. 0: no cap.
	MaxInFlight int
	// CheckInterval is how often, at most, the module looks at the file
	// again; 0 means 10ms.
	CheckInterval time.Duration
	// Fault applies to the operation calls on a session (encrypt and
	// decrypt in all their forms; sign, verify and digest; key generation,
	// wrap, unwrap and derive; object create, copy, destroy, find and
	// attributes; random), never to opening, closing, login, logout or
	// session information, so that recovery can always reconnect; "" means
	// none.
	Fault Fault
	// FaultRV is the error FaultError answers; 0 means CKR_DEVICE_ERROR.
	FaultRV uint
	// FaultToken limits the fault to sessions of the token with this label;
	// "" means every token.
	FaultToken string
	// FaultCount limits the fault to the next FaultCount calls after the
	// file is read; 0 means every call while it is on. A hung call counts
	// once.
	FaultCount int
}

// Write writes the settings file at path atomically (a new file renamed
// over the old), so that the module never reads half of it, and so that it
// notices the change even within one mtime tick (the inode changes).
func (c Config) Write(path string) error {
	if strings.ContainsAny(c.Module+c.FaultToken, "#\n") || len(c.FaultToken) > 32 {
		return errors.New("netsim: Module and FaultToken must not hold '#' or newlines; FaultToken is at most 32 bytes")
	}
	var b strings.Builder
	if c.Module != "" {
		fmt.Fprintf(&b, "module = %s\n", c.Module)
	}
	fmt.Fprintf(&b, "latency_us = %d\njitter_us = %d\nmax_in_flight = %d\n",
		c.Latency.Microseconds(), c.Jitter.Microseconds(), c.MaxInFlight)
	if c.CheckInterval > 0 {
		fmt.Fprintf(&b, "check_ms = %d\n", max(1, c.CheckInterval.Milliseconds()))
	}
	if c.Fault != "" {
		fmt.Fprintf(&b, "fault = %s\n", c.Fault)
	}
	if c.FaultRV != 0 {
		fmt.Fprintf(&b, "fault_rv = %#x\n", c.FaultRV)
	}
	if c.FaultToken != "" {
		fmt.Fprintf(&b, "fault_token = %s\n", c.FaultToken)
	}
	if c.FaultCount > 0 {
		fmt.Fprintf(&b, "fault_count = %d\n", c.FaultCount)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".netsim-*.conf")
	if err != nil {
		return fmt.Errorf("netsim: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		return fmt.Errorf("netsim: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("netsim: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("netsim: %w", err)
	}
	return nil
}

// ErrNoCompiler means the C compiler the module is built with is missing.
var ErrNoCompiler = errors.New("netsim: no C compiler (gcc, or $CC) to build the simulated network HSM; install gcc")

// Build compiles the module to out with the system C compiler ($CC, else
// gcc). The sources are embedded in this package, so Build works from any
// directory.
func Build(out string) error {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		return ErrNoCompiler
	}
	dir, err := os.MkdirTemp("", "netsim-src-")
	if err != nil {
		return fmt.Errorf("netsim: %w", err)
	}
	defer os.RemoveAll(dir)
	entries, err := source.ReadDir("csrc")
	if err != nil {
		return fmt.Errorf("netsim: %w", err)
	}
	for _, e := range entries {
		b, err := source.ReadFile("csrc/" + e.Name())
		if err != nil {
			return fmt.Errorf("netsim: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			return fmt.Errorf("netsim: %w", err)
		}
	}
	// The Makefile's netsim target passes the same flags.
	cmd := exec.Command(cc, "-shared", "-fPIC", "-O2", "-Wall", "-fvisibility=hidden",
		"-o", out, filepath.Join(dir, "netsim.c"), "-ldl", "-lpthread")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netsim: %s: %w\n%s", cc, err, msg)
	}
	return nil
}
