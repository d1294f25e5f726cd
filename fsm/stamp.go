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
	case CreateOperator:
		proposed, c.At = c.At, at
		return c, proposed, true
	case Audited:
		// The record's time and the change's are the same leader's clock.
		proposed, c.At = c.At, at
		if inner, innerProposed, timed := Stamped(c.inner, at); timed {
			proposed = innerProposed
			// A change that does not encode again (a time past year
			// 9999) is left out, and the envelope is refused as empty.
			b, err := Encode(inner)
			c.inner, c.Command = inner, b
			if err != nil {
				c.inner, c.Command = nil, nil
			}
		}
		return c, proposed, true
	}
	return c, time.Time{}, false
}
