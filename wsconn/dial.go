package wsconn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"
)

// Dial opens a WebSocket connection to url with header, and returns it with
// the network connection under it. A handshake the peer refuses is an
// *HTTPStatusError.
func Dial(ctx context.Context, url string, header http.Header) (*websocket.Conn, io.Closer, error) {
	var (
		mu  sync.Mutex
		raw net.Conn
	)
	d := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			mu.Lock()
			raw = c
			mu.Unlock()
			return c, err
		},
	}}
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: header})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, nil, &HTTPStatusError{Status: resp.StatusCode, Err: err}
		}
		return nil, nil, fmt.Errorf("dial %s: %w", redact(url), err)
	}
	mu.Lock()
	defer mu.Unlock()
	return ws, raw, nil
}

// redact drops the query (it may hold access_token) from a URL for logs.
func redact(url string) string {
	for i := 0; i < len(url); i++ {
		if url[i] == '?' {
			return url[:i] + "?…"
		}
	}
	return url
}

// Accept upgrades an HTTP request to a WebSocket connection and returns it
// with the network connection under it.
func Accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, io.Closer, error) {
	hw := &hijackRecorder{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil, nil, err
	}
	return ws, hw.conn, nil
}

type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("http.ResponseWriter does not implement http.Hijacker")
	}
	c, rw, err := hj.Hijack()
	h.conn = c
	return c, rw, err
}
