package health

import (
	"context"
	"log/slog"
	"sync"
)

// FailureLog logs a repeating failure once per change: the first failure and
// every one that differs from the last at warn, repeats at debug.
type FailureLog struct {
	mu   sync.Mutex
	last string
}

// Log logs err with msg and hint.
func (l *FailureLog) Log(log *slog.Logger, msg string, err error, hint string) {
	l.mu.Lock()
	same := l.last == err.Error()
	l.last = err.Error()
	l.mu.Unlock()
	level := slog.LevelWarn
	if same {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, msg, "error", err, "hint", hint)
}

// Reset forgets the last failure, after a success.
func (l *FailureLog) Reset() {
	l.mu.Lock()
	l.last = ""
	l.mu.Unlock()
}
