package hsm

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/miekg/pkcs11"
)

// module is the part of *pkcs11.Ctx this package uses. It exists so that
// tests can wrap the real module to inject faults (slow or failing calls);
// production code always talks to *pkcs11.Ctx directly through it.
type module interface {
	Initialize(opts ...pkcs11.InitializeOption) error
	Finalize() error
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error)
	OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error)
	CloseSession(sh pkcs11.SessionHandle) error
	Login(sh pkcs11.SessionHandle, userType uint, pin string) error
	Logout(sh pkcs11.SessionHandle) error
	FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error
	FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error)
	FindObjectsFinal(sh pkcs11.SessionHandle) error
	GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	EncryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Encrypt(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
	DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Decrypt(sh pkcs11.SessionHandle, cipher []byte) ([]byte, error)
}

// Cryptoki state (C_Initialize, login, sessions) is per process, so two HSM
// values on one module would log each other out and finalize each other's
// sessions. The registry allows one open HSM per module and keeps every
// loaded module loaded for the life of the process: unloading and reloading a
// crypto library (dlclose/dlopen) is a classic source of crashes and buys
// nothing here.
var registry = struct {
	sync.Mutex
	loaded map[string]*pkcs11.Ctx
	inUse  map[string]bool
}{loaded: map[string]*pkcs11.Ctx{}, inUse: map[string]bool{}}

// claimModule loads the module at path (once per process) and marks it in use.
func claimModule(path string) (*pkcs11.Ctx, string, error) {
	key := filepath.Clean(path)
	if resolved, err := filepath.EvalSymlinks(key); err == nil {
		key = resolved
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.inUse[key] {
		return nil, "", fmt.Errorf("hsm: PKCS#11 module %s is already open in this process", path)
	}
	ctx := registry.loaded[key]
	if ctx == nil {
		ctx = pkcs11.New(key)
		if ctx == nil {
			return nil, "", fmt.Errorf("hsm: cannot load PKCS#11 module %s", path)
		}
		registry.loaded[key] = ctx
	}
	registry.inUse[key] = true
	return ctx, key, nil
}

func releaseModule(key string) {
	registry.Lock()
	delete(registry.inUse, key)
	registry.Unlock()
}

// isCode reports whether err is (or wraps) the PKCS#11 return value rv.
func isCode(err error, rv uint) bool {
	var pe pkcs11.Error
	return errors.As(err, &pe) && uint(pe) == rv
}
