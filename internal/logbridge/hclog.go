// Package logbridge writes the logs of the libraries we embed — raft and
// memberlist (hclog and the standard log package), fasthttp (Printf) — as
// our own zerolog lines: at the level the library meant, with its key/value
// pairs as JSON fields, and with exactly one `component` key naming the
// library. It imports none of our server packages.
package logbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/rs/zerolog"
)

// ComponentKey names the part of the node a line comes from.
const ComponentKey = "component"

// extraValueKey holds a value left without a key by an odd number of
// arguments; hclog's own loggers use the same name.
const extraValueKey = "EXTRA_VALUE_AT_END"

// Hclog is an hclog.Logger that writes to `to` with name as the component.
// `to` must not carry a component of its own: zerolog appends context
// fields, it does not replace them, so the line would have two.
//
// hclog's levels map one to one (Trace, Debug, Info, Warn, Error); lines
// below to's level are dropped, and the Is* guards say so, so that raft
// skips building them. Arguments become typed fields: strings, integers,
// floats and booleans as JSON values, errors as their message, durations
// as Go duration strings ("1.5s": a field name such as raft's "time"
// does not say a unit, the string does), anything else as fmt prints it.
// An argument whose key the line already has — our own keys (time, level,
// message, component) or a field of to's context — is renamed
// name_key (raft's "time" becomes "raft_time"), so that no line carries a
// key twice: log pipelines that index JSON reject such lines.
func Hclog(to zerolog.Logger, name string) hclog.Logger {
	return &hclogger{log: to, name: name, taken: takenKeys(to)}
}

type hclogger struct {
	log     zerolog.Logger
	name    string
	implied []any
	taken   map[string]bool
}

// takenKeys are the keys every line of `to` carries before any argument:
// zerolog's own, ours, and whatever to's context adds (found by writing
// one empty line to a buffer: zerolog has no accessor for its context).
func takenKeys(to zerolog.Logger) map[string]bool {
	taken := map[string]bool{
		zerolog.TimestampFieldName: true, zerolog.LevelFieldName: true, zerolog.MessageFieldName: true,
		zerolog.CallerFieldName: true, ComponentKey: true,
	}
	var probe bytes.Buffer
	probeLog := to.Output(&probe)
	probeLog.Log().Send()
	var fields map[string]json.RawMessage
	if json.Unmarshal(probe.Bytes(), &fields) == nil {
		for k := range fields {
			taken[k] = true
		}
	}
	return taken
}

func zerologLevel(l hclog.Level) zerolog.Level {
	switch l {
	case hclog.Trace:
		return zerolog.TraceLevel
	case hclog.Debug:
		return zerolog.DebugLevel
	case hclog.Warn:
		return zerolog.WarnLevel
	case hclog.Error:
		return zerolog.ErrorLevel
	case hclog.Off:
		return zerolog.Disabled
	default: // Info, and NoLevel, which hclog reads as its default, Info
		return zerolog.InfoLevel
	}
}

func (l *hclogger) Log(level hclog.Level, msg string, args ...any) {
	ev := l.log.WithLevel(zerologLevel(level))
	if ev == nil {
		return
	}
	ev.Str(ComponentKey, l.name)
	all := args
	if len(l.implied) > 0 {
		all = append(l.implied[:len(l.implied):len(l.implied)], args...)
	}
	for i := 0; i < len(all); i += 2 {
		if i+1 == len(all) {
			field(ev, extraValueKey, all[i])
			break
		}
		key := keyOf(all[i])
		if keyAgain(all[i+2:], key) {
			continue // a later value for the same key wins (a line's own over With's)
		}
		if l.taken[key] {
			key = l.name + "_" + key
		}
		field(ev, key, all[i+1])
	}
	ev.Msg(msg)
}

// keyOf is an argument's key: hclog asks for strings, and prints others.
func keyOf(k any) string {
	if s, ok := k.(string); ok {
		return s
	}
	return fmt.Sprint(k)
}

// keyAgain reports whether key is one of the keys of the pairs in rest.
func keyAgain(rest []any, key string) bool {
	for i := 0; i+1 < len(rest); i += 2 {
		if keyOf(rest[i]) == key {
			return true
		}
	}
	return false
}

func field(ev *zerolog.Event, key string, v any) {
	switch v := v.(type) {
	case string:
		ev.Str(key, v)
	case bool:
		ev.Bool(key, v)
	case int:
		ev.Int(key, v)
	case int32:
		ev.Int32(key, v)
	case int64:
		ev.Int64(key, v)
	case uint:
		ev.Uint(key, v)
	case uint32:
		ev.Uint32(key, v)
	case uint64:
		ev.Uint64(key, v)
	case float64:
		ev.Float64(key, v)
	case error:
		ev.Str(key, v.Error())
	case time.Duration:
		ev.Str(key, v.String())
	case time.Time:
		ev.Time(key, v)
	case hclog.Format: // hclog.Fmt("%+v", servers): raft's preformatted values
		if len(v) > 0 {
			if f, ok := v[0].(string); ok {
				ev.Str(key, fmt.Sprintf(f, v[1:]...))
				break
			}
		}
		ev.Str(key, fmt.Sprint(v...))
	case nil:
		ev.Interface(key, nil)
	default: // raft.ServerID and other named strings, Stringers, structs
		ev.Str(key, fmt.Sprint(v))
	}
}

func (l *hclogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l *hclogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l *hclogger) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l *hclogger) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l *hclogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l *hclogger) enabled(level hclog.Level) bool {
	z := zerologLevel(level)
	return z != zerolog.Disabled && z >= l.log.GetLevel() && z >= zerolog.GlobalLevel()
}

func (l *hclogger) IsTrace() bool { return l.enabled(hclog.Trace) }
func (l *hclogger) IsDebug() bool { return l.enabled(hclog.Debug) }
func (l *hclogger) IsInfo() bool  { return l.enabled(hclog.Info) }
func (l *hclogger) IsWarn() bool  { return l.enabled(hclog.Warn) }
func (l *hclogger) IsError() bool { return l.enabled(hclog.Error) }

func (l *hclogger) ImpliedArgs() []any { return l.implied }

func (l *hclogger) With(args ...any) hclog.Logger {
	c := *l
	c.implied = append(l.implied[:len(l.implied):len(l.implied)], args...)
	return &c
}

func (l *hclogger) Name() string { return l.name }

// Named appends to the name with a dot, as hclog's own loggers do.
func (l *hclogger) Named(name string) hclog.Logger {
	if l.name != "" {
		name = l.name + "." + name
	}
	return l.ResetNamed(name)
}

func (l *hclogger) ResetNamed(name string) hclog.Logger {
	c := *l
	c.name = name
	return &c
}

// SetLevel does nothing: the level is the node's log level, which belongs
// to the zerolog logger (hclog allows a logger to ignore SetLevel).
func (l *hclogger) SetLevel(hclog.Level) {}

func (l *hclogger) GetLevel() hclog.Level {
	switch z := max(l.log.GetLevel(), zerolog.GlobalLevel()); {
	case z <= zerolog.TraceLevel:
		return hclog.Trace
	case z == zerolog.DebugLevel:
		return hclog.Debug
	case z == zerolog.InfoLevel:
		return hclog.Info
	case z == zerolog.WarnLevel:
		return hclog.Warn
	case z < zerolog.Disabled:
		return hclog.Error
	default:
		return hclog.Off
	}
}

func (l *hclogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

// StandardWriter takes the standard log package's lines, as memberlist
// writes them ("[WARN] memberlist: Refuting a suspect message"): the
// bracketed level becomes the line's level (always, as if InferLevels were
// set: keeping levels is the point of this package, and a line without one
// is at Info), unless opts.ForceLevel sets it; "name: " at the start of the
// message is dropped, since the component says it.
func (l *hclogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := stdWriter{l: l}
	if opts != nil {
		w.force = opts.ForceLevel
	}
	return w
}

type stdWriter struct {
	l     *hclogger
	force hclog.Level
}

var stdLevels = []struct {
	prefix string
	level  hclog.Level
}{
	{"[TRACE]", hclog.Trace},
	{"[DEBUG]", hclog.Debug},
	{"[INFO]", hclog.Info},
	{"[WARN]", hclog.Warn},
	{"[ERR]", hclog.Error},
	{"[ERROR]", hclog.Error},
}

func (w stdWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), " \t\r\n")
	level := hclog.Info
	for _, s := range stdLevels {
		if rest, ok := strings.CutPrefix(line, s.prefix); ok {
			line, level = strings.TrimLeft(rest, " "), s.level
			break
		}
	}
	if w.force != hclog.NoLevel {
		level = w.force
	}
	if w.l.name != "" {
		line = strings.TrimPrefix(line, w.l.name+": ")
	}
	w.l.Log(level, line)
	return len(p), nil
}
