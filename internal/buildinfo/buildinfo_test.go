package buildinfo

import "testing"

func TestStringCarriesTheCommit(t *testing.T) {
	for _, tc := range []struct {
		info Info
		want string
	}{
		{Info{Version: "0.1.0", Commit: "1c5a291f927162262417f319d925c47d600815fe"}, "0.1.0+1c5a291f9271"},
		{Info{Version: "0.1.0", Commit: "1c5a291f927162262417f319d925c47d600815fe", Modified: true}, "0.1.0+1c5a291f9271-dirty"},
		{Info{Version: "devel"}, "devel"},
	} {
		if got := tc.info.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.info, got, tc.want)
		}
	}
}

func TestReadWithoutLinkerFlags(t *testing.T) {
	i := Read()
	if i.Version == "" || i.GoVersion == "" {
		t.Fatalf("%+v: a version and the Go toolchain are always known", i)
	}
}
