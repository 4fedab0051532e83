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

// DropLog logs the first frame dropped for each reason at warn, with the
// reason, and the rest at debug: a peer that keeps sending bad frames is
// logged once per reason, and obmux_dropped_frames_total counts every one.
type DropLog struct {
	mu   sync.Mutex
	seen [numDrops]bool
}

// Log logs msg and args for a frame dropped for d.
func (l *DropLog) Log(log *slog.Logger, d Drop, msg string, args ...any) {
	l.mu.Lock()
	first := !l.seen[d]
	l.seen[d] = true
	l.mu.Unlock()
	level := slog.LevelDebug
	args = append(args, "reason", d.String())
	if first {
		level = slog.LevelWarn
		args = append(args, "repeats", "logged at debug; obmux_dropped_frames_total{reason=\""+d.String()+"\"} counts every one")
	}
	log.Log(context.Background(), level, msg, args...)
}

// Reset forgets what was logged, for a new connection.
func (l *DropLog) Reset() {
	l.mu.Lock()
	l.seen = [numDrops]bool{}
	l.mu.Unlock()
}
