package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coder/websocket"
)

// ErrKeepaliveTimeout is returned by Keepalive when a pong did not arrive in
// time.
var ErrKeepaliveTimeout = errors.New("keepalive timeout")

// Keepalive sends a WebSocket ping every interval and waits up to timeout for
// the pong, reporting each round trip to onRTT. It returns ErrKeepaliveTimeout
// (wrapped) when a pong is late, or nil once ctx is done. A concurrent reader
// must be running on ws: coder/websocket only sees pongs through it.
// An interval of zero or less disables keepalive: Keepalive then waits for ctx.
// While held reports true the reader is deliberately paused (backpressure),
// so a late pong proves nothing: the verdict waits for the next ping.
func Keepalive(ctx context.Context, ws *websocket.Conn, interval, timeout time.Duration, held func() bool, onRTT func(time.Duration)) error {
	if interval <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		err := ws.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				if held != nil && held() {
					continue
				}
				return fmt.Errorf("no pong within %s: %w", timeout, ErrKeepaliveTimeout)
			}
			return fmt.Errorf("ping: %w", err)
		}
		onRTT(time.Since(start))
	}
}
