package hsm

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

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
	CreateObject(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error
	CopyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error)
	GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	WrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, wrappingkey, key pkcs11.ObjectHandle) ([]byte, error)
	UnwrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, unwrappingkey pkcs11.ObjectHandle, wrappedkey []byte, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	EncryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Encrypt(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
	DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Decrypt(sh pkcs11.SessionHandle, cipher []byte) ([]byte, error)
}

// registry holds one sharedModule per module path for the life of the
// process. Loaded modules stay loaded: unloading and reloading a crypto
// library (dlclose/dlopen) is a classic source of crashes and buys nothing
// here.
var registry = struct {
	sync.Mutex
	modules map[string]*sharedModule
}{modules: map[string]*sharedModule{}}

// sharedModule is one PKCS#11 library and the HSMs (one per token) using it.
// C_Initialize and C_Finalize act on the whole process, so they belong here:
// the module is initialised when its first HSM opens and finalized when its
// last one closes, and a re-initialisation that one HSM's recovery needs is
// done for all of them at once. Login, by contrast, is per token, so each
// HSM logs into its own token.
type sharedModule struct {
	path string
	ctx  *pkcs11.Ctx

	// mu serialises everything that touches the module as a whole: opening
	// an HSM, closing one, and re-initialising. Lock order: HSM.checkMu,
	// then mu, then sessions (taken out of the pools).
	mu          sync.Mutex
	initialized bool
	tokens      map[string]bool // labels of the open tokens
	// members are the HSMs that may be inside the library: every open HSM,
	// plus closed ones whose Close could not drain a hung call. A closed
	// member leaves once its pool has been drained, so the module is never
	// finalized under a running call.
	members []*HSM
}

// loadModule returns the shared state of the module at path, loading the
// library the first time.
func loadModule(path string) (*sharedModule, error) {
	key := filepath.Clean(path)
	if resolved, err := filepath.EvalSymlinks(key); err == nil {
		key = resolved
	}
	registry.Lock()
	defer registry.Unlock()
	if m := registry.modules[key]; m != nil {
		return m, nil
	}
	ctx := pkcs11.New(key)
	if ctx == nil {
		return nil, fmt.Errorf("hsm: cannot load PKCS#11 module %s", path)
	}
	m := &sharedModule{path: key, ctx: ctx, tokens: map[string]bool{}}
	registry.modules[key] = m
	return m, nil
}

// join initialises the module if no HSM uses it yet and connects h to its
// token. Holding mu keeps a re-initialisation from pulling the module away
// halfway through.
func (m *sharedModule) join(h *HSM) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	label := h.cfg.TokenLabel
	if m.tokens[label] {
		// Two HSMs on one token would share its login and log each other
		// out.
		return fmt.Errorf("hsm: token %q of PKCS#11 module %s is already open in this process", label, m.path)
	}
	if !m.initialized {
		if err := h.initialize(); err != nil {
			return err
		}
		m.initialized = true
	}
	if err := h.connect(); err != nil {
		if len(m.members) == 0 {
			// C_Finalize also closes whatever sessions connect opened; its
			// own error would only hide err.
			_ = h.p11.Finalize()
			m.initialized = false
		} else {
			// The module serves other tokens: close only our sessions, which
			// also logs this token out.
			for _, s := range h.sessions {
				if s.h != 0 {
					_ = h.p11.CloseSession(s.h)
				}
			}
		}
		return err
	}
	h.setHealth(&state{Health: Health{Status: StatusActive, CheckedAt: time.Now()}}, true)
	m.tokens[label] = true
	m.members = append(m.members, h)
	return nil
}

// leave closes h's sessions (logging its token out) and finalizes the
// module if h was its last user. The caller has marked h closed.
func (m *sharedModule) leave(h *HSM) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tokens, h.cfg.TokenLabel)
	held, err := h.collect()
	if err != nil {
		// h stays a member, with its workers refusing calls, so that the
		// session coming back from the hung call is drained before anyone
		// finalizes the module.
		h.leftover = true
		h.release(held)
		return fmt.Errorf("hsm: close: %w; module left initialised", err)
	}
	m.retire(h, held)
	if len(m.members) > 0 {
		return nil
	}
	if err := h.p11.Finalize(); err != nil && !isCode(err, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		return fmt.Errorf("hsm: finalize module: %w", err)
	}
	m.initialized = false
	return nil
}

// reconnect is h's recovery without the module's re-initialisation, tried
// while another member serves: it closes h's sessions and connects h again
// (sessions, login, health key, round trip). It reports done = false, and
// does nothing or leaves h's sessions closed, when the module must be
// re-initialised instead: no other member serves, or h could not reach its
// token. A failure after that (the token failing its operations) is h's
// recovery error: re-initialising would only interrupt the members that
// serve, every back-off period, for as long as h's fault lasts.
func (m *sharedModule) reconnect(h *HSM) (done bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h.st.Load().down == nil {
		return true, nil
	}
	serving := func(o *HSM) bool { return o != h && !o.st.Load().closed && o.inRotation() }
	if !m.initialized || !slices.ContainsFunc(m.members, serving) {
		return false, nil
	}
	held, err := h.collect()
	defer h.release(held)
	if err != nil {
		return true, fmt.Errorf("hsm: reconnect postponed: %w", err)
	}
	for _, s := range h.sessions {
		if s.h != 0 {
			// A session the failure ended fails to close; that is moot.
			_ = h.p11.CloseSession(s.h)
			s.h = 0
		}
	}
	err = h.connect()
	var u unreachable
	if errors.As(err, &u) {
		return false, nil
	}
	if err == nil {
		h.setHealth(&state{Health: Health{Status: StatusActive, CheckedAt: time.Now()}}, true)
	}
	return true, err
}

// reinit runs C_Finalize and C_Initialize for h's recovery, and reconnects
// every HSM of the module, because finalizing ends all of their sessions
// and logins. It first drains every member's pool, so no goroutine is inside
// the library (PKCS#11 leaves C_Finalize undefined otherwise); a call still
// hung then postpones the whole re-initialisation.
//
// Another member comes back ACTIVE if its token is fine and UNAVAILABLE
// (with its monitor woken to keep retrying) if it is not. Its callers meet
// an empty pool meanwhile and wait, up to WaitTimeout, rather than fail.
// h's own connect error is returned for the caller to record.
func (m *sharedModule) reinit(h *HSM) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h.st.Load().down == nil {
		// Another member's re-initialisation brought h back meanwhile.
		return nil
	}
	members := slices.Clone(m.members)
	held := make([][]*session, len(members))
	defer func() {
		for i, o := range members {
			o.release(held[i])
		}
	}()
	for i, o := range members {
		s, err := o.collect()
		held[i] = s
		if err != nil {
			return fmt.Errorf("hsm: module re-initialisation postponed: token %q: %w", o.cfg.TokenLabel, err)
		}
	}
	// C_Finalize closes every session (closing them one by one could hit a
	// stale handle number the module has since reused). Its error is moot:
	// C_Initialize and connect below say whether the module works again.
	_ = h.p11.Finalize()
	m.initialized = false
	for i, o := range members {
		// The numbers will be handed out again, possibly to another
		// member's sessions: nobody may close them any more.
		for _, s := range o.sessions {
			s.h = 0
		}
		if o.leftover {
			m.retire(o, held[i])
			held[i] = nil
		}
	}
	ierr := h.initialize()
	if ierr == nil {
		m.initialized = true
	}
	var own error
	for _, o := range m.members {
		if o.st.Load().closed {
			// Its Close is waiting for mu and will find nothing to close.
			continue
		}
		err := ierr
		if err == nil {
			err = o.connect()
		}
		if o == h {
			own = err
		}
		switch {
		case err == nil:
			o.setHealth(&state{Health: Health{Status: StatusActive, CheckedAt: time.Now()}}, true)
		case o != h:
			o.fail(fmt.Errorf("hsm: module re-initialised for token %q: %w", h.cfg.TokenLabel, err))
		}
	}
	return own
}

// retire ends a closed member whose pool is drained: it stops the workers,
// logs the token out, closes the sessions that are still open and drops h
// from the members.
func (m *sharedModule) retire(h *HSM, held []*session) {
	loggedOut := false
	for _, s := range held {
		close(s.jobs)
		if s.h == 0 {
			continue
		}
		// Logout and CloseSession fail only for sessions that are already
		// gone, and nothing is left to do about those.
		if !loggedOut {
			_ = h.p11.Logout(s.h)
			loggedOut = true
		}
		_ = h.p11.CloseSession(s.h)
	}
	h.leftover = false
	m.members = slices.DeleteFunc(m.members, func(o *HSM) bool { return o == h })
}

// isCode reports whether err is (or wraps) the PKCS#11 return value rv.
func isCode(err error, rv uint) bool {
	var pe pkcs11.Error
	return errors.As(err, &pe) && uint(pe) == rv
}
