package testlog

import "testing"

func TestCheckJSONLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{`{"level":"info","message":"x","n":1,"a":[1,{"b":2}],"o":{"k":null}}`, true},
		{`{"component":"cluster","component":"gossip"}`, false},
		{`{"o":{"k":1,"k":2}}`, false},
		{`{"a":[{"k":1,"k":2}]}`, false},
		{`{"a":1} {"b":2}`, false},
		{`"text"`, false},
		{`{"a":`, false},
		{`[1 TRUNCATED`, false},
	} {
		if err := CheckJSONLine([]byte(tc.line)); (err == nil) != tc.ok {
			t.Errorf("%s: error %v, want ok=%v", tc.line, err, tc.ok)
		}
	}
}
