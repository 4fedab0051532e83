package wsconn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coder/websocket"
)

// errKeepaliveTimeout ends a connection whose keepalive pong did not arrive
// in time.
var errKeepaliveTimeout = errors.New("keepalive timeout")

// ping sends one WebSocket ping on ws and waits up to timeout for its pong.
// It returns the round trip, errKeepaliveTimeout (wrapped) when the pong is
// late, or the ping's own error (such as a closed connection). A concurrent
// reader must be running on ws: coder/websocket only sees pongs through it.
// A late pong does not close ws.
func ping(ws *websocket.Conn, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	if err := ws.Ping(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("no pong within %s: %w", timeout, errKeepaliveTimeout)
		}
		return 0, fmt.Errorf("ping: %w", err)
	}
	return time.Since(start), nil
}
