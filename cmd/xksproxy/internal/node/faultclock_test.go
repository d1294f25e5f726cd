package node

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestFaultClock(t *testing.T) {
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	t.Setenv(FaultClockOffsetEnv, "")
	if now, err := faultClock(log); now != nil || err != nil || logs.Len() != 0 {
		t.Fatalf("unset: %v %v %q", now != nil, err, logs.String())
	}
	t.Setenv(FaultClockOffsetEnv, "ten minutes")
	if _, err := faultClock(log); err == nil {
		t.Fatal("a malformed offset was accepted")
	}
	t.Setenv(FaultClockOffsetEnv, "10m")
	now, err := faultClock(log)
	if err != nil {
		t.Fatal(err)
	}
	if d := now().Sub(time.Now()); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("offset clock is %v from the real one", d)
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) || !strings.Contains(logs.String(), "clock is offset by 10m0s") {
		t.Fatalf("no warning: %s", logs.String())
	}
}
