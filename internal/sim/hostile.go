package sim

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/coder/websocket"
)

// Hostile peers, for soak tests: each floods obmux as fast as it lets them
// until ctx is done, counting in n what it did. None of them waits between
// attempts, so each keeps the pressure on throughout.

// UnreadFlood is a WebSocket client of url (dialled with header h) that
// writes frame as fast as the server reads it and reads nothing,
// reconnecting when the server closes it. n counts the frames written.
func UnreadFlood(ctx context.Context, url string, h http.Header, frame []byte, n *atomic.Int64) {
	for ctx.Err() == nil {
		ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			continue
		}
		for ctx.Err() == nil && ws.Write(ctx, websocket.MessageText, frame) == nil {
			n.Add(1)
		}
		ws.CloseNow()
	}
}

// WrongTokenFlood sends GET requests to url with a wrong bearer token, one
// after the other over one kept-alive connection, as fast as the server
// refuses them. n counts the answers.
func WrongTokenFlood(ctx context.Context, url string, n *atomic.Int64) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer wrong")
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		n.Add(1)
	}
}

// BodylessFlood holds a POST request whose body never comes open on the
// TCP address addr, opening the next when the server closes one (obmux
// does after OBMUX_HTTP_TIMEOUT). n counts the requests sent.
func BodylessFlood(ctx context.Context, addr string, n *atomic.Int64) {
	for ctx.Err() == nil {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: "+addr+"\r\nContent-Length: 1000\r\n\r\n"); err == nil {
			n.Add(1)
			io.Copy(io.Discard, c) // until the server closes it
		}
		stop()
		c.Close()
	}
}
