// Package hsm performs the proxy's AES-256-GCM operations in a PKCS#11 HSM.
//
// An HSM is one token: one login, a bounded pool of sessions, a
// key-label-to-handle cache, error classification and recovery, and a health
// monitor that does a real round trip on a dedicated health key. Several
// tokens of one module can be open at once; they share the module
// (C_Initialize/C_Finalize) and re-initialise it together.
// Every call is bounded: a caller waits at most Config.WaitTimeout for a
// session (then ErrBusy) and Config.CallTimeout for the HSM (then ErrTimeout),
// because AWS KMS gives the whole request 250 ms.
//
// Cryptoki state is per process: this package assumes it is the only user of
// its modules in the process, and allows one open HSM per token.
//
// See DESIGN.md in this directory for the reasoning.
package hsm

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Config says which token to use and how long callers may wait.
type Config struct {
	// ModulePath is the PKCS#11 library path. Required.
	ModulePath string
	// TokenLabel is the label of the token to use. Required.
	TokenLabel string
	// PIN is the user PIN. Required.
	PIN string
	// PoolSize is the number of sessions opened at Open; 0 means 2.
	PoolSize int
	// WaitTimeout is the longest wait for a free session; 0 means 50ms.
	// A caller that waits longer gets ErrBusy.
	WaitTimeout time.Duration
	// CallTimeout is the longest one HSM operation may take before the
	// caller gets ErrTimeout; 0 means 150ms. The operation itself cannot be
	// interrupted: it finishes in the background and then frees its session.
	CallTimeout time.Duration
	// HealthKeyLabel is the label of the dedicated key used by health
	// probes, created at Open when missing; "" means "xksproxy-health".
	HealthKeyLabel string
	// HealthInterval is the period of the background deep check; 0 means
	// 10s. It also caps the back-off between recovery attempts.
	HealthInterval time.Duration
}

// DefaultHealthKeyLabel is the health key's label when the Config names
// none. Like the cluster keys' labels, it is reserved: no customer key may
// use it (fsm keeps a copy of these labels, checked by a cluster test).
const DefaultHealthKeyLabel = "xksproxy-health"

const (
	defaultPoolSize       = 2
	defaultWaitTimeout    = 50 * time.Millisecond
	defaultCallTimeout    = 150 * time.Millisecond
	defaultHealthInterval = 10 * time.Second

	// PKCS#11 token labels are 32 bytes, blank padded.
	maxTokenLabel = 32
)

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.ModulePath == "":
		return c, errors.New("hsm: config: ModulePath is required")
	case c.TokenLabel == "":
		return c, errors.New("hsm: config: TokenLabel is required")
	case len(c.TokenLabel) > maxTokenLabel:
		return c, fmt.Errorf("hsm: config: TokenLabel is longer than %d bytes", maxTokenLabel)
	case c.PIN == "":
		return c, errors.New("hsm: config: PIN is required")
	case c.PoolSize < 0, c.WaitTimeout < 0, c.CallTimeout < 0, c.HealthInterval < 0:
		return c, errors.New("hsm: config: PoolSize and durations must not be negative")
	}
	if c.PoolSize == 0 {
		c.PoolSize = defaultPoolSize
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = defaultWaitTimeout
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = defaultCallTimeout
	}
	if c.HealthKeyLabel == "" {
		c.HealthKeyLabel = DefaultHealthKeyLabel
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = defaultHealthInterval
	}
	return c, nil
}

// Errors returned by this package wrap one of these (use errors.Is); they may
// also wrap the underlying pkcs11.Error for logging. None of them carries
// plaintext, key material or the PIN.
var (
	// ErrBusy: no session became free within WaitTimeout (HTTP 429).
	ErrBusy = errors.New("hsm: no session free")
	// ErrTimeout: the HSM call outlived CallTimeout (HTTP 503).
	ErrTimeout = errors.New("hsm: call outlived its deadline")
	// ErrInvalidCiphertext: the tag, IV, AAD or ciphertext did not
	// authenticate (HTTP 400 InvalidCiphertextException).
	ErrInvalidCiphertext = errors.New("hsm: ciphertext did not authenticate")
	// ErrKeyNotFound: the token holds no AES key with that label.
	ErrKeyNotFound = errors.New("hsm: key not found")
	// ErrKeyExists: GenerateKey or UnwrapKey was asked for a label that is
	// taken.
	ErrKeyExists = errors.New("hsm: key already exists")
	// ErrUnavailable: the token or module failed (or the HSM is closed);
	// the monitor is recovering in the background (HTTP 500).
	ErrUnavailable = errors.New("hsm: unavailable")
	// ErrInvalidInput: the request is malformed, for example an IV that is
	// not 12 bytes on encrypt.
	ErrInvalidInput = errors.New("hsm: invalid input")
)

var (
	errClosed        = fmt.Errorf("%w: closed", ErrUnavailable)
	errEncryptIVSize = fmt.Errorf("%w: encrypt IV must be exactly %d bytes", ErrInvalidInput, ivSize)
	errDecryptIVSize = fmt.Errorf("%w: decrypt IV must be 12 or 16 bytes", ErrInvalidInput)
	errTagSize       = fmt.Errorf("%w: authentication tag must be %d bytes", ErrInvalidInput, tagSize)
	errEmptyLabel    = fmt.Errorf("%w: empty key label", ErrInvalidInput)
)

// HSM is an open token. Its methods are safe for concurrent use.
type HSM struct {
	cfg    Config
	p11    module
	shared *sharedModule
	epoch  time.Time // origin of the monotonic clock readings in lastPass
	// leftover marks a closed HSM whose Close found a call still running;
	// guarded by shared.mu.
	leftover bool

	// slot and the sessions' handles change only while one goroutine holds
	// every session (Open, recovery, Close), so pool hand-offs order them.
	slot     uint
	sessions []*session
	free     chan *session

	keysMu sync.RWMutex
	keys   map[string]*cachedKey
	// keysGen counts destroyed keys, so that a lookup that raced with
	// DestroyKey does not cache the destroyed key's handle.
	keysGen uint64
	// genMu makes the exists-check and the creation or destruction of a
	// labelled key one step.
	genMu sync.Mutex
	// searchMu keeps searches of the token apart from calls that make
	// objects. SoftHSMv2 2.6.1 makes them in the open: a session copy
	// (keycache.go) gets every attribute of its original, CKA_TOKEN true
	// included, before its own template makes it a session object, and a
	// new token key has its label before its value. A search running
	// meanwhile finds two token keys under one label, or a key that cannot
	// encrypt yet, and a C_GenerateKey racing a search can fail outright.
	// Calls that make objects share the lock; a search takes it alone.
	// Searches are rare (a key the cache does not hold yet), so the cost is
	// a search waiting for the makings in flight, and makings waiting for a
	// search. A call that hangs holding it holds up the others of this HSM
	// with it, but such a call takes the HSM out of rotation anyway (a call
	// stuck past CallTimeout does), until the recovery that waits for it.
	searchMu sync.RWMutex
	// revalidated is the label the last deep check re-read last, and
	// revalidateBatch how many one check re-reads (see revalidate). A
	// check's revalidation may outlive its deadline and overlap the next:
	// revalidateMu keeps them apart.
	revalidateMu    sync.Mutex
	revalidated     string
	revalidateBatch int

	healthMu sync.Mutex // serialises writers of st
	st       atomic.Pointer[state]
	token    atomic.Pointer[tokenInfo]
	lastPass atomic.Int64  // time since epoch of the last passing probe; 0 = none
	stuck    atomic.Int64  // calls that outlived CallTimeout and are still running
	timeouts atomic.Uint64 // calls that outlived CallTimeout, ever
	waiting  atomic.Int64  // callers queued for a session
	callNS   atomic.Int64  // moving average of one HSM call, in nanoseconds

	checkMu     sync.Mutex // one deep check or recovery at a time
	kick        chan struct{}
	closing     chan struct{}
	monitorDone chan struct{}
	closeOnce   sync.Once
	closeErr    error
}

type tokenInfo struct{ model, manufacturer, serial string }

// Open loads the module (once per process), initialises it unless another
// HSM of the module did, finds the token by label, opens the session pool,
// logs in, makes sure the health key exists, checks a round trip and starts
// the health monitor. A token that is open already in this process is
// refused.
func Open(cfg Config) (*HSM, error) {
	return open(cfg, nil)
}

// open is Open with an optional wrapper around the module, the seam tests
// use to inject faults.
func open(cfg Config, wrap func(module) module) (*HSM, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	shared, err := loadModule(cfg.ModulePath)
	if err != nil {
		return nil, err
	}
	var mod module = shared.ctx
	if wrap != nil {
		mod = wrap(mod)
	}
	h := &HSM{
		cfg:             cfg,
		p11:             mod,
		shared:          shared,
		epoch:           time.Now(),
		free:            make(chan *session, cfg.PoolSize),
		keys:            map[string]*cachedKey{},
		revalidateBatch: revalidateBatch,
		kick:            make(chan struct{}, 1),
		closing:         make(chan struct{}),
		monitorDone:     make(chan struct{}),
	}
	if err := shared.join(h); err != nil {
		return nil, err
	}
	for _, s := range h.sessions {
		go h.worker(s)
		h.free <- s
	}
	go h.monitor()
	return h, nil
}

// initialize runs C_Initialize. Cryptoki state is per process, so a module
// something else in the process initialised already is ready for us too.
func (h *HSM) initialize() error {
	if err := h.p11.Initialize(); err != nil && !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return fmt.Errorf("hsm: initialize module %s: %w", h.cfg.ModulePath, err)
	}
	return nil
}

// connect finds the token, opens (or re-opens) every session, logs in once,
// makes sure the health key exists and proves a round trip. The caller holds
// every session and the module's lock.
func (h *HSM) connect() error {
	slot, info, err := findToken(h.p11, h.cfg.TokenLabel)
	if err != nil {
		return unreachable{err}
	}
	h.slot = slot
	h.token.Store(info)
	h.clearKeys()
	if h.sessions == nil {
		h.sessions = make([]*session, h.cfg.PoolSize)
		for i := range h.sessions {
			h.sessions[i] = newSession(i)
		}
	}
	for i, s := range h.sessions {
		sh, err := h.p11.OpenSession(slot, sessionFlags)
		if err != nil {
			return unreachable{fmt.Errorf("hsm: open session on token %q: %w", h.cfg.TokenLabel, err)}
		}
		s.h = sh
		if i == 0 {
			if err := h.login(sh); err != nil {
				return unreachable{err}
			}
		}
	}
	s := h.sessions[0]
	if _, err := h.keyHandle(s, h.cfg.HealthKeyLabel); errors.Is(err, ErrKeyNotFound) {
		err = h.generate(s, h.cfg.HealthKeyLabel)
		if err != nil {
			return fmt.Errorf("hsm: create health key: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("hsm: find health key: %w", err)
	}
	if err := h.roundTrip(s); err != nil {
		return fmt.Errorf("hsm: health probe: %w", err)
	}
	h.lastPass.Store(h.now())
	return nil
}

// unreachable marks a connect error from before the token answered: no
// slot with a readable token of that label, no session, no login. A module
// may need re-initialising to get past it (see HSM.recover); an error after
// it (the health key, the round trip) is the token's own.
type unreachable struct{ error }

func (u unreachable) Unwrap() error { return u.error }

func findToken(p module, label string) (uint, *tokenInfo, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, nil, fmt.Errorf("hsm: list slots: %w", err)
	}
	var found []uint
	var info *tokenInfo
	for _, slot := range slots {
		ti, err := p.GetTokenInfo(slot)
		// A slot whose token cannot be read is not usable, whatever it is.
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 || ti.Label != label {
			continue
		}
		found = append(found, slot)
		info = &tokenInfo{model: ti.Model, manufacturer: ti.ManufacturerID, serial: ti.SerialNumber}
	}
	switch len(found) {
	case 0:
		return 0, nil, fmt.Errorf("hsm: no readable token labelled %q", label)
	case 1:
		return found[0], info, nil
	}
	return 0, nil, fmt.Errorf("hsm: %d tokens labelled %q", len(found), label)
}

// login logs the user in. Login state is per token and application, shared
// by all sessions, so "already logged in" is success.
func (h *HSM) login(sh pkcs11.SessionHandle) error {
	err := h.p11.Login(sh, pkcs11.CKU_USER, h.cfg.PIN)
	if err != nil && !isCode(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		return fmt.Errorf("hsm: log in to token %q: %w", h.cfg.TokenLabel, err)
	}
	return nil
}

// Close stops the monitor, waits for running calls, closes the sessions
// and logs the token out; the last HSM of a module to close also finalizes
// the module. Later calls return the first result. If an HSM call is still
// running after the drain wait, Close leaves the module initialised
// (finalizing under a running call is undefined behaviour) and says so.
func (h *HSM) Close() error {
	h.closeOnce.Do(func() { h.closeErr = h.close() })
	return h.closeErr
}

func (h *HSM) close() error {
	h.setHealth(&state{Health: Health{Status: StatusUnavailable, CheckedAt: time.Now(), Err: "closed"}, down: errClosed, closed: true}, true)
	close(h.closing)
	<-h.monitorDone
	h.checkMu.Lock()
	defer h.checkMu.Unlock()
	return h.shared.leave(h)
}

// EncryptGCM encrypts plaintext with AES-256-GCM under the key labelled
// keyLabel, with a 128-bit tag. The caller supplies a fresh random 12-byte
// IV (crypto/rand); any other length is refused with ErrInvalidInput, because
// SoftHSMv2 would encrypt deterministically under an empty IV. ciphertext has
// the plaintext's length; ciphertext and tag share one backing array.
//
// If EncryptGCM returns ErrTimeout the HSM may still be reading iv,
// plaintext and aad: do not modify or reuse them (copy them out of request
// buffers before calling).
func (h *HSM) EncryptGCM(keyLabel string, iv, plaintext, aad []byte) (ciphertext, tag []byte, err error) {
	if len(iv) != ivSize {
		return nil, nil, errEncryptIVSize
	}
	if keyLabel == "" {
		return nil, nil, errEmptyLabel
	}
	c := getCall(opEncrypt, keyLabel)
	c.iv, c.in, c.aad = iv, plaintext, aad
	out, _, err := h.do(c, h.cfg.WaitTimeout)
	if err != nil {
		return nil, nil, err
	}
	n := len(plaintext)
	return out[:n:n], out[n:], nil
}

// DecryptGCM authenticates and decrypts ciphertext under the key labelled
// keyLabel. iv may be 12 or 16 bytes; tag must be 16. A tag, IV, AAD or
// ciphertext that does not authenticate gives ErrInvalidCiphertext.
//
// If DecryptGCM returns ErrTimeout the HSM may still be reading the inputs:
// do not modify or reuse them.
func (h *HSM) DecryptGCM(keyLabel string, iv, ciphertext, tag, aad []byte) (plaintext []byte, err error) {
	if len(iv) != ivSize && len(iv) != 16 {
		return nil, errDecryptIVSize
	}
	if len(tag) != tagSize {
		return nil, errTagSize
	}
	if keyLabel == "" {
		return nil, errEmptyLabel
	}
	c := getCall(opDecrypt, keyLabel)
	c.iv, c.in, c.tag, c.aad = iv, ciphertext, tag, aad
	out, _, err := h.do(c, h.cfg.WaitTimeout)
	return out, err
}

// GenerateKey creates a non-extractable AES-256 token key labelled label,
// usable only for encrypt and decrypt. A label already in use gives
// ErrKeyExists; the labels of the health and cluster keys are refused with
// ErrInvalidInput. After ErrTimeout the key may or may not exist: ask HasKey.
func (h *HSM) GenerateKey(label string) error {
	switch {
	case label == "":
		return errEmptyLabel
	case h.reserved(label):
		return fmt.Errorf("%w: %q is reserved", ErrInvalidInput, label)
	}
	_, _, err := h.do(getCall(opGenerate, label), h.cfg.WaitTimeout)
	return err
}

// HasKey reports whether the token holds an AES key labelled label.
func (h *HSM) HasKey(label string) (bool, error) {
	if label == "" {
		return false, errEmptyLabel
	}
	_, found, err := h.do(getCall(opHasKey, label), h.cfg.WaitTimeout)
	return found, err
}

// TokenInfo returns the token's model, manufacturer and serial number as
// read at Open or at the last recovery; it never calls the HSM.
func (h *HSM) TokenInfo() (model, manufacturer, serial string) {
	t := h.token.Load()
	return t.model, t.manufacturer, t.serial
}
