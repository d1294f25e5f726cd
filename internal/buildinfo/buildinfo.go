// Package buildinfo is the build's identity: the release version, the
// commit and the build date that `make build` sets with -ldflags -X, and
// otherwise what the Go toolchain recorded (debug.ReadBuildInfo's module
// version and vcs settings), so that a plain `go build` still names its
// commit.
package buildinfo

import (
	"runtime/debug"
	"strings"
	"sync"
)

// Set by the linker: go build -ldflags "-X <this package>.version=0.1.0 ...";
// modified is "true" for a tree with uncommitted changes.
var (
	version  string
	commit   string
	date     string
	modified string
)

// Info identifies a build.
type Info struct {
	Version   string // the release, e.g. 0.1.0; "devel" when nothing names one
	Commit    string // the full commit hash, or "" when unknown
	Modified  bool   // built from a tree with uncommitted changes
	Date      string // RFC 3339: the build's date, or without make the commit's
	GoVersion string
}

// Read returns this binary's identity (read once: it never changes).
func Read() Info { return readOnce() }

var readOnce = sync.OnceValue(read)

func read() Info {
	info := Info{Version: version, Commit: commit, Date: date, Modified: modified == "true"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return withDefaults(info)
	}
	info.GoVersion = bi.GoVersion
	if info.Version == "" && bi.Main.Version != "(devel)" {
		// A tag's v0.1.0, or a pseudo-version; Modified says "+dirty".
		info.Version = strings.TrimSuffix(strings.TrimPrefix(bi.Main.Version, "v"), "+dirty")
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if info.Commit == "" {
				info.Commit = s.Value
			}
		case "vcs.time":
			if info.Date == "" {
				info.Date = s.Value
			}
		case "vcs.modified":
			info.Modified = info.Modified || s.Value == "true"
		}
	}
	return withDefaults(info)
}

func withDefaults(i Info) Info {
	if i.Version == "" {
		i.Version = "devel"
	}
	return i
}

// ShortCommit is the commit's first 12 hex digits, with "-dirty" for a
// modified tree; "" when the commit is unknown.
func (i Info) ShortCommit() string {
	c := i.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if c != "" && i.Modified {
		c += "-dirty"
	}
	return c
}

// String is the version with its commit, as nodes report it to each other
// and `cluster status` shows it: two builds of one release from different
// commits must not look alike during a rolling upgrade.
func (i Info) String() string {
	if c := i.ShortCommit(); c != "" {
		return i.Version + "+" + c
	}
	return i.Version
}
