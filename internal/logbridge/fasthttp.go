package logbridge

import (
	"fmt"

	"github.com/rs/zerolog"
)

// The messages fasthttp (v1.78) writes through its Logger that a server
// configured as ours can meet, by their format strings, which fasthttp
// passes to Printf unchanged.
const (
	fasthttpServingError   = "error when serving connection %q<->%q: %v"
	fasthttpAcceptTimeout  = "Timeout error when accepting new connections: %v"
	fasthttpAcceptFailed   = "Permanent error when accepting new connections: %v"
	fasthttpComponentValue = "fasthttp"
)

// FastHTTP is a fasthttp.Logger whose lines carry component "fasthttp".
//
// fasthttp logs two kinds of things. A client's connection that failed
// ("error when serving connection") is input from anyone, so it goes
// through Peer, at debug: the server's error handler has already logged
// the request at its own level (a failed TLS handshake, an idle
// connection, a malformed request), and this line only adds the
// addresses. Its fields are local, remote and error. A failure of our own
// listener's Accept goes to Log: at warn when fasthttp retries it (a
// timeout), at error when it gives up. Any other message, which fasthttp
// may write about a client, goes through Peer whole, at warn.
type FastHTTP struct {
	// Log takes the lines about this node's own listener.
	Log zerolog.Logger
	// Peer starts a line caused by a client at a level, or returns nil
	// to drop it (xksapi passes its rate limit of lines about
	// unauthenticated callers).
	Peer func(zerolog.Level) *zerolog.Event
	// Cut bounds text that came from a client.
	Cut func(string) string
	// Logged reports an error that the server has logged already, which
	// is then not logged again; nil: none.
	Logged func(error) bool
}

func (f FastHTTP) Printf(format string, args ...any) {
	switch format {
	case fasthttpServingError:
		if len(args) != 3 {
			break
		}
		err, _ := args[2].(error)
		if err != nil && f.Logged != nil && f.Logged(err) {
			return
		}
		if ev := f.Peer(zerolog.DebugLevel); ev != nil {
			ev.Str(ComponentKey, fasthttpComponentValue).Str("local", fmt.Sprint(args[0])).Str("remote", fmt.Sprint(args[1])).
				Str("error", f.Cut(fmt.Sprint(args[2]))).Msg("error when serving connection")
		}
		return
	case fasthttpAcceptTimeout:
		if len(args) == 1 {
			f.Log.Warn().Str(ComponentKey, fasthttpComponentValue).Str("error", fmt.Sprint(args[0])).
				Msg("accepting a connection timed out; retrying in a second")
			return
		}
	case fasthttpAcceptFailed:
		if len(args) == 1 {
			f.Log.Error().Str(ComponentKey, fasthttpComponentValue).Str("error", fmt.Sprint(args[0])).
				Msg("accepting connections failed; the listener stops")
			return
		}
	}
	if ev := f.Peer(zerolog.WarnLevel); ev != nil {
		ev.Str(ComponentKey, fasthttpComponentValue).Msg(f.Cut(fmt.Sprintf(format, args...)))
	}
}
