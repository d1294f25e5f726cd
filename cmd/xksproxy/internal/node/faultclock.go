package node

import (
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// FaultClockOffsetEnv names the fault-injection clock offset: a Go duration
// ("10m", "-90s") added to every clock this node decides by — SigV4's
// 5-minute rule and credential expiry in the data plane, deletion dates and
// the times the leader stamps on commands in the cluster. It exists for the
// fault suite, which must skew one node's clock without skewing the machine's
// (Go reads the wall clock through the vDSO, where libfaketime cannot reach,
// and time namespaces do not cover CLOCK_REALTIME). It is not configuration:
// the operator's TOML has no such key, and a node that has it set says so at
// warn when it starts.
const FaultClockOffsetEnv = "XKSPROXY_FAULT_CLOCK_OFFSET"

// faultClock returns the node's clock: nil (time.Now, the packages' default)
// unless FaultClockOffsetEnv is set.
func faultClock(log zerolog.Logger) (func() time.Time, error) {
	v, ok := os.LookupEnv(FaultClockOffsetEnv)
	if !ok || v == "" {
		return nil, nil
	}
	offset, err := time.ParseDuration(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", FaultClockOffsetEnv, err)
	}
	log.Warn().Stringer("offset", offset).Str("env", FaultClockOffsetEnv).
		Msgf("fault injection: this node's clock is offset by %s (a test hook; never set it in production)", offset)
	return func() time.Time { return time.Now().Add(offset) }, nil
}
