// Package testlog holds what tests use to capture a server's or a child
// process's output while it is still being written.
package testlog

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer safe for one writer and concurrent readers.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Line is the first line written so far that contains substr, or "".
func (b *Buffer) Line(substr string) string {
	for line := range strings.Lines(b.String()) {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return ""
}
