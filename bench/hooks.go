package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Hook is a scenario hook: a shell command run at a given time into the
// measured window, to show what an operator action or a failure does to
// live traffic.
type Hook struct {
	At      time.Duration
	Command string
}

// ParseHook reads "10s=kill -9 1234" (a Go duration or whole seconds, then
// the command).
func ParseHook(s string) (Hook, error) {
	at, command, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(command) == "" {
		return Hook{}, fmt.Errorf("hook %q is not TIME=COMMAND (e.g. 10s='kill -9 $(cat DIR/node1/pid)')", s)
	}
	at = strings.TrimSpace(at)
	d, err := time.ParseDuration(at)
	if err != nil {
		secs, serr := strconv.ParseFloat(at, 64)
		if serr != nil {
			return Hook{}, fmt.Errorf("hook time %q is neither a duration nor seconds", at)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 {
		return Hook{}, fmt.Errorf("hook time %q is negative", at)
	}
	return Hook{At: d, Command: command}, nil
}

// hookGrace is how long hooks still running at the end of a run may go on
// before their process group is killed: a run is bounded in time.
const hookGrace = 5 * time.Second

// hookOutputBytes is how much of a hook's output the report keeps: its end.
const hookOutputBytes = 2048

// tail keeps the last bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > hookOutputBytes {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-hookOutputBytes:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// hookRunner runs a run's hooks, each in its own process group so that it
// and its children can be stopped as a whole.
type hookRunner struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	records []HookRecord
	procs   []*exec.Cmd // the hooks running now
}

// start schedules every hook at measureStart+At; it returns at once.
func startHooks(ctx context.Context, clock Clock, hooks []Hook, measureStart time.Time) *hookRunner {
	h := &hookRunner{records: make([]HookRecord, len(hooks)), procs: make([]*exec.Cmd, len(hooks))}
	for i, hook := range hooks {
		h.records[i] = HookRecord{AtSeconds: hook.At.Seconds(), Command: hook.Command, ExitCode: -1}
		h.wg.Add(1)
		go h.run(ctx, clock, i, hook, measureStart)
	}
	return h
}

func (h *hookRunner) run(ctx context.Context, clock Clock, i int, hook Hook, measureStart time.Time) {
	defer h.wg.Done()
	since := func() float64 { return round(clock.Now().Sub(measureStart).Seconds(), 3) }
	if !clock.SleepUntil(ctx, measureStart.Add(hook.At)) {
		h.update(i, func(r *HookRecord) { r.Error = "not run: the run ended before its time" })
		return
	}
	out := &tail{}
	cmd := exec.Command("/bin/sh", "-c", hook.Command)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = hookEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	h.update(i, func(r *HookRecord) { r.Ran, r.StartedSeconds = true, since() })
	if err := cmd.Start(); err != nil {
		h.update(i, func(r *HookRecord) { r.Error, r.EndedSeconds = clip(err.Error()), since() })
		return
	}
	h.mu.Lock()
	h.procs[i] = cmd
	h.mu.Unlock()
	err := cmd.Wait()
	h.mu.Lock()
	h.procs[i] = nil
	h.mu.Unlock()
	h.update(i, func(r *HookRecord) {
		r.EndedSeconds, r.Output = since(), out.String()
		r.ExitCode = cmd.ProcessState.ExitCode()
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			r.Error = clip(err.Error())
		}
		if r.ExitCode == -1 && r.Error == "" {
			r.Error = "killed: " + cmd.ProcessState.String()
		}
	})
}

// hookEnv is our environment without the SigV4 secret: a hook has no use
// for it and might print its environment.
func hookEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, SecretEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// SecretEnv is the environment variable xksbench reads the SigV4 secret
// from when it is not in a file: a flag would show it in the process list.
const SecretEnv = "XKSBENCH_SECRET"

func (h *hookRunner) update(i int, f func(*HookRecord)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(&h.records[i])
}

// finish waits up to grace for hooks still running, then kills their
// process groups, and returns what every hook did. cancel must stop the
// hooks that have not started yet.
func (h *hookRunner) finish(cancel context.CancelFunc, grace time.Duration) []HookRecord {
	cancel()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		h.mu.Lock()
		for _, cmd := range h.procs {
			if cmd != nil {
				// A negative pid signals the hook's whole process group,
				// which we created for it: nothing else is touched.
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		}
		h.mu.Unlock()
		<-done
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]HookRecord, len(h.records))
	copy(out, h.records)
	return out
}
