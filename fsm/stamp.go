package fsm

import "time"

// Stamped returns c with its At set to at, the At it had, and whether c
// carries a time at all.
// The leader stamps every command it proposes with its own clock, because At
// decides things: a deletion date (ScheduleDeletion), whether that date has
// come (DeleteKey), whether a credential is still active (RemoveCredential).
// Left to the proposer, one node with a wrong clock, or one forged proposal,
// would move them. Creation times are stamped too, so that every time in the
// state is the cluster's clock: the leader's.
func Stamped(c Command, at time.Time) (stamped Command, proposed time.Time, timed bool) {
	switch c := c.(type) {
	case Seed:
		proposed, c.At = c.At, at
		return c, proposed, true
	case CreateKeyStore:
		proposed, c.At = c.At, at
		return c, proposed, true
	case AddCredential:
		proposed, c.At = c.At, at
		return c, proposed, true
	case RemoveCredential:
		proposed, c.At = c.At, at
		return c, proposed, true
	case CreateKey:
		proposed, c.At = c.At, at
		return c, proposed, true
	case AddKeyVersion:
		proposed, c.At = c.At, at
		return c, proposed, true
	case AddGrant:
		proposed, c.At = c.At, at
		return c, proposed, true
	case ScheduleDeletion:
		proposed, c.At = c.At, at
		return c, proposed, true
	case DeleteKey:
		proposed, c.At = c.At, at
		return c, proposed, true
	case RevokeNodeCertificates:
		proposed, c.At = c.At, at
		return c, proposed, true
	}
	return c, time.Time{}, false
}
