package hsm

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// Group is several HSMs of one node (several network HSMs, or partitions of
// one) used as one: each operation goes to a member in rotation with a free
// session, and one that fails or times out is retried on the next. A member
// is out of rotation while it is down (a device error, a failed probe or
// deep check: its own monitor recovers it) or while one of its calls is
// stuck past CallTimeout (a hang: it rejoins once its calls come back). Key
// material is put into every member. See DESIGN.md.
type Group struct {
	members []*HSM
	next    atomic.Uint32
	// served counts each member's successful operations, for per-HSM
	// metrics (a group of one counts too).
	served []atomic.Uint64
}

// NewGroup makes a group of open HSMs; it owns them from then on (Close
// closes them). Every member must hold the same cluster keys, so that a
// blob wrapped or a secret sealed by one is read by any.
func NewGroup(members ...*HSM) (*Group, error) {
	if len(members) == 0 {
		return nil, errors.New("hsm: a group needs at least one HSM")
	}
	return &Group{members: members, served: make([]atomic.Uint64, len(members))}, nil
}

// Members are the group's HSMs, in the order given, for per-HSM health and
// metrics.
func (g *Group) Members() []*HSM { return g.members }

// inRotation: the member takes new calls.
func (h *HSM) inRotation() bool {
	return h.st.Load().down == nil && h.stuck.Load() == 0
}

// InRotation reports whether the HSM takes new calls in a group: it is not
// down and no call of its is stuck past CallTimeout.
func (h *HSM) InRotation() bool { return h.inRotation() }

// Served is how many operations member i (in Members' order) answered
// successfully since the group was made.
func (g *Group) Served(i int) uint64 { return g.served[i].Load() }

// failsOver says whether an operation that failed with err may succeed on
// another member: the member failed, timed out or was busy, or lacks the
// key (its copy of replicated key material may not have arrived yet).
// Everything else (a bad tag, bad input) would fail anywhere.
func failsOver(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout) ||
		errors.Is(err, ErrBusy) || errors.Is(err, ErrKeyNotFound)
}

// pick returns the order in which to try the members: those in rotation
// with a free session first, starting at a rotating place, then those in
// rotation without one, then the rest (they answer at once that they are
// down, which is the right error when every member is).
func (g *Group) pick(order []int) []int {
	n := len(g.members)
	start := int(g.next.Add(1)) % n
	order = order[:0]
	for pass := 0; pass < 3; pass++ {
		for k := range n {
			i := (start + k) % n
			m := g.members[i]
			inRotation := m.inRotation()
			var take bool
			switch pass {
			case 0:
				take = inRotation && len(m.free) > 0
			case 1:
				take = inRotation && len(m.free) == 0
			default:
				take = !inRotation
			}
			if take {
				order = append(order, i)
			}
		}
	}
	return order
}

// try runs op on members in pick order until one succeeds or the error
// would fail anywhere; when every member failed it returns the most telling
// of their errors (mostTelling).
func (g *Group) try(op func(*HSM) error) error {
	var buf [8]int
	var err error
	for _, i := range g.pick(buf[:0]) {
		e := op(g.members[i])
		if e == nil {
			g.served[i].Add(1)
			return nil
		}
		if !failsOver(e) {
			return e
		}
		err = mostTelling(err, e)
	}
	return err
}

// failoverErrors rank the errors that fail over, most telling first: a
// member that shed the call (the node is overloaded: 429 asks KMS to back
// off), one that timed out, one that is down, one that lacks the key
// (another member may hold it and be down). Without the ranking a live
// member's ErrBusy was hidden behind the ErrUnavailable of the down member
// tried after it (measured by make bench-failover: 500s where 429s were
// right).
var failoverErrors = [...]error{ErrBusy, ErrTimeout, ErrUnavailable, ErrKeyNotFound}

// mostTelling returns whichever of a (nil: none yet) and b ranks first in
// failoverErrors; a on a tie.
func mostTelling(a, b error) error {
	if a == nil {
		return b
	}
	for _, sentinel := range failoverErrors {
		switch {
		case errors.Is(a, sentinel):
			return a
		case errors.Is(b, sentinel):
			return b
		}
	}
	return a
}

// countSole counts a group of one's operation that succeeded.
func (g *Group) countSole(err error) {
	if err == nil {
		g.served[0].Add(1)
	}
}

// EncryptGCM is HSM.EncryptGCM on a member in rotation, failing over (a
// group of one calls its member directly, at the cost of one counter). A
// retry after ErrTimeout reuses the IV with the same key, plaintext and AAD:
// if the abandoned call completes too, it produces the same ciphertext, so
// no IV is ever used for two different messages.
func (g *Group) EncryptGCM(keyLabel string, iv, plaintext, aad []byte) (ciphertext, tag []byte, err error) {
	if len(g.members) == 1 {
		ciphertext, tag, err = g.members[0].EncryptGCM(keyLabel, iv, plaintext, aad)
		g.countSole(err)
		return ciphertext, tag, err
	}
	err = g.try(func(h *HSM) error {
		var e error
		ciphertext, tag, e = h.EncryptGCM(keyLabel, iv, plaintext, aad)
		return e
	})
	return ciphertext, tag, err
}

// DecryptGCM is HSM.DecryptGCM on a member in rotation, failing over.
func (g *Group) DecryptGCM(keyLabel string, iv, ciphertext, tag, aad []byte) (plaintext []byte, err error) {
	if len(g.members) == 1 {
		plaintext, err = g.members[0].DecryptGCM(keyLabel, iv, ciphertext, tag, aad)
		g.countSole(err)
		return plaintext, err
	}
	err = g.try(func(h *HSM) error {
		var e error
		plaintext, e = h.DecryptGCM(keyLabel, iv, ciphertext, tag, aad)
		return e
	})
	return plaintext, err
}

// Seal is HSM.Seal on a member in rotation, failing over.
func (g *Group) Seal(plaintext, aad []byte) (sealed []byte, err error) {
	err = g.try(func(h *HSM) error {
		var e error
		sealed, e = h.Seal(plaintext, aad)
		return e
	})
	return sealed, err
}

// Unseal is HSM.Unseal on a member in rotation, failing over.
func (g *Group) Unseal(sealed, aad []byte) (plaintext []byte, err error) {
	err = g.try(func(h *HSM) error {
		var e error
		plaintext, e = h.Unseal(sealed, aad)
		return e
	})
	return plaintext, err
}

// GenerateWrappedKey is HSM.GenerateWrappedKey on a member in rotation,
// failing over; every member can unwrap the blob.
func (g *Group) GenerateWrappedKey() (wrapped []byte, mechanism string, err error) {
	err = g.try(func(h *HSM) error {
		var e error
		wrapped, mechanism, e = h.GenerateWrappedKey()
		return e
	})
	return wrapped, mechanism, err
}

// UnwrapKey unwraps the blob into every member, so that any can serve the
// key. A member that has the key already counts as done. It returns the
// members' errors joined, naming each failing member's token; the key is
// then in some members and not others, and calling again finishes the job.
func (g *Group) UnwrapKey(wrapped []byte, mechanism, label string) error {
	var errs []error
	for _, m := range g.members {
		if err := m.UnwrapKey(wrapped, mechanism, label); err != nil && !errors.Is(err, ErrKeyExists) {
			errs = append(errs, fmt.Errorf("token %q: %w", m.cfg.TokenLabel, err))
		}
	}
	return errors.Join(errs...)
}

// HasKey reports whether every member holds the key: a member without it
// could not serve it.
func (g *Group) HasKey(label string) (bool, error) {
	for _, m := range g.members {
		ok, err := m.HasKey(label)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// DestroyKey destroys the key in every member; a member without it counts
// as done.
func (g *Group) DestroyKey(label string) error {
	var errs []error
	for _, m := range g.members {
		if err := m.DestroyKey(label); err != nil && !errors.Is(err, ErrKeyNotFound) {
			errs = append(errs, fmt.Errorf("token %q: %w", m.cfg.TokenLabel, err))
		}
	}
	return errors.Join(errs...)
}

// Health is the group's: ACTIVE when every member is, UNAVAILABLE when none
// serves, DEGRADED in between. Members gives each one's own. CheckedAt is
// the latest check of a member that serves (of any member when none does),
// so that a node whose serving members' monitors have all stalled shows an
// overdue check, as a node of one HSM does.
func (g *Group) Health() Health {
	if len(g.members) == 1 {
		return g.members[0].Health()
	}
	serving, active := 0, 0
	var errs []string
	var checked, servingChecked time.Time
	for _, m := range g.members {
		h := m.Health()
		switch h.Status {
		case StatusActive:
			active++
			serving++
		case StatusDegraded:
			serving++
		}
		if h.Status != StatusUnavailable && h.CheckedAt.After(servingChecked) {
			servingChecked = h.CheckedAt
		}
		if h.CheckedAt.After(checked) {
			checked = h.CheckedAt
		}
		if h.Err != "" {
			errs = append(errs, m.cfg.TokenLabel+": "+h.Err)
		}
	}
	if serving > 0 {
		checked = servingChecked
	}
	out := Health{Status: StatusDegraded, CheckedAt: checked, Err: strings.Join(errs, "; ")}
	switch {
	case active == len(g.members):
		out.Status, out.Err = StatusActive, ""
	case serving == 0:
		out.Status = StatusUnavailable
	}
	return out
}

// ImportClusterKeys imports the ceremony material into every member (see
// HSM.ImportClusterKeys; a member holding both keys is left alone).
func (g *Group) ImportClusterKeys(material []byte) error {
	var errs []error
	for _, m := range g.members {
		if err := m.ImportClusterKeys(material); err != nil {
			errs = append(errs, fmt.Errorf("token %q: %w", m.cfg.TokenLabel, err))
		}
	}
	return errors.Join(errs...)
}

// HasClusterKeys reports whether every member holds the cluster keys.
func (g *Group) HasClusterKeys() (bool, error) {
	for _, m := range g.members {
		ok, err := m.HasClusterKeys()
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// CheckNow runs every member's deep check and returns the group's health.
func (g *Group) CheckNow() Health {
	for _, m := range g.members {
		m.CheckNow()
	}
	return g.Health()
}

// Stats adds up the members' pools; CallAverage and ExpectedWait are the
// largest member's, Timeouts and Stuck the sums.
func (g *Group) Stats() Stats {
	var sum Stats
	for _, m := range g.members {
		st := m.Stats()
		sum.PoolSize += st.PoolSize
		sum.InUse += st.InUse
		sum.Waiting += st.Waiting
		sum.Stuck += st.Stuck
		sum.Timeouts += st.Timeouts
		sum.ExpectedWait = max(sum.ExpectedWait, st.ExpectedWait)
		sum.CallAverage = max(sum.CallAverage, st.CallAverage)
	}
	return sum
}

// TokenLabel is the label of the member's token.
func (h *HSM) TokenLabel() string { return h.cfg.TokenLabel }

// HealthKeyLabel is the label of the key the health checks use, which a
// short measurement may load too.
func (h *HSM) HealthKeyLabel() string { return h.cfg.HealthKeyLabel }

// TokenInfo is the first member's.
func (g *Group) TokenInfo() (model, manufacturer, serial string) {
	return g.members[0].TokenInfo()
}

// Close closes every member.
func (g *Group) Close() error {
	var errs []error
	for _, m := range g.members {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}
