package testenv

import (
	"bytes"
	"sync"
)

// SyncBuffer collects output that a process's or a server's goroutines
// write while the test reads it, e.g. a log shown when a test fails.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
