package wsconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/health"
)

// Served is how one connection that Redial dialed ended: what its Serve
// returns.
type Served struct {
	// Reason and Err say why the connection ended, as Conn.Run returns them.
	Reason health.Reason
	Err    error
	// Lasted is how long the connection was served, from its greeting.
	Lasted time.Duration
}

// RefusedWithin is how soon after its greeting a peer's close makes a
// connection refused (Served.Refused).
const RefusedWithin = time.Second

// Refused reports whether the peer closed the connection, with a close
// frame, within RefusedWithin of its greeting: a framework that accepts the
// WebSocket and then turns the connection down (Koishi on another path or
// with another selfId, NoneBot with another connection for the X-Self-ID).
// A connection lost without a close frame (a network cut) is not refused.
func (s Served) Refused() bool {
	var ce websocket.CloseError
	return s.Reason == health.ReasonClosedByPeer && s.Lasted < RefusedWithin && errors.As(s.Err, &ce)
}

// RefusedError is a connection the peer refused (Served.Refused), as a
// failed dial: it says the close code and reason, never how long it took,
// so that a repeat logs as one.
type RefusedError struct {
	Code   websocket.StatusCode
	Reason string
}

// Error implements error.
func (e *RefusedError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("the peer accepted the WebSocket and closed it at once (close %d %s, no reason given)", int(e.Code), e.Code)
	}
	return fmt.Sprintf("the peer accepted the WebSocket and closed it at once (close %d %s: %q)", int(e.Code), e.Code, e.Reason)
}

// refusedError returns the RefusedError of a refused connection's end.
func refusedError(err error) *RefusedError {
	var ce websocket.CloseError
	errors.As(err, &ce)
	return &RefusedError{Code: ce.Code, Reason: ce.Reason}
}

// Log logs the end of the connection as msg with attrs after its reason and
// error: at info for a shutdown, at warn for any other end.
func (s Served) Log(ctx context.Context, log *slog.Logger, msg string, attrs ...any) {
	level := slog.LevelWarn
	if s.Reason == health.ReasonShutdown {
		level = slog.LevelInfo
	}
	log.Log(ctx, level, msg, append([]any{"reason", s.Reason.String(), "error", s.Err}, attrs...)...)
}

// Redial keeps one dialed connection up: it builds the handshake's headers,
// dials, records and logs a failed dial (once per change of error), backs
// off, serves the connection until it ends, logs how it ended, and dials
// again. The upstream (dial mode) and every reverse-WS target are a Redial.
type Redial struct {
	// URL is the address dialed.
	URL     string
	Backoff Backoff
	// Handshakes, if not nil, is shared with other connections' dials:
	// at most so many handshakes at once.
	Handshakes *Handshakes
	// Header returns the headers of the next handshake; false skips the
	// attempt (ctx is done, or there is nothing to dial for yet), which
	// then counts as a failed one for the backoff but is not logged.
	Header func(ctx context.Context) (http.Header, bool)
	// Serve runs one dialed connection until it ends.
	Serve func(ctx context.Context, ws *websocket.Conn, raw io.Closer) Served
	// Stats records every failed dial; Log receives the messages.
	Stats *health.Stats
	Log   *slog.Logger
	// DialFailed is the message of a failed dial and DialHint explains one.
	DialFailed string
	DialHint   func(err error) string
	// Disconnected is the message of a connection's end; CloseHint, if not
	// nil, explains one (its "hint").
	Disconnected string
	CloseHint    func(err error) string
	// RefusedHint, if not nil, makes a refused connection (Served.Refused)
	// a failed dial: recorded and logged as DialFailed with this hint for
	// its *RefusedError (once per change), backed off, and not logged as
	// Disconnected.
	RefusedHint func(err *RefusedError) string
}

// Run dials and serves until ctx is done.
func (r *Redial) Run(ctx context.Context) {
	var failures health.FailureLog
	r.Backoff.Loop(ctx, func(ctx context.Context) bool { return r.attempt(ctx, &failures) })
}

// attempt is one turn of Run: dial, then serve. It reports whether it
// connected (see Backoff.Loop).
func (r *Redial) attempt(ctx context.Context, failures *health.FailureLog) bool {
	h, ok := r.Header(ctx)
	if !ok {
		return false
	}
	ws, raw, err := r.Handshakes.Dial(ctx, r.URL, h)
	if err != nil {
		r.dialFailed(ctx, failures, err, r.DialHint(err))
		return false
	}
	start := time.Now()
	end := r.Serve(ctx, ws, raw)
	if end.Lasted == 0 {
		end.Lasted = time.Since(start)
	}
	return r.served(ctx, failures, end)
}

// dialFailed records and logs a dial that failed with err (a repeat of the
// last error at debug), unless ctx ended it.
func (r *Redial) dialFailed(ctx context.Context, failures *health.FailureLog, err error, hint string) {
	if ctx.Err() != nil {
		return
	}
	r.Stats.Failed(err)
	failures.Log(r.Log, r.DialFailed, err, hint)
}

// served logs how a dialed connection ended and reports whether the attempt
// counts as connected. This is the one place that judges a served
// connection: one the peer refused (with RefusedHint set) is a failed dial.
func (r *Redial) served(ctx context.Context, failures *health.FailureLog, end Served) bool {
	if r.RefusedHint != nil && end.Refused() {
		err := refusedError(end.Err)
		r.dialFailed(ctx, failures, err, r.RefusedHint(err))
		return false
	}
	failures.Reset()
	var attrs []any
	if r.CloseHint != nil {
		attrs = append(attrs, "hint", r.CloseHint(end.Err))
	}
	end.Log(ctx, r.Log, r.Disconnected, attrs...)
	return true
}
