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
	"time"

	"github.com/coder/websocket"
)

// HandshakeTimeout bounds one dial: TCP connect, TLS and the WebSocket
// upgrade.
const HandshakeTimeout = 10 * time.Second

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
		Proxy:               http.ProxyFromEnvironment,
		TLSHandshakeTimeout: HandshakeTimeout,
		// Only the handshake goes through these buffers, but the read one
		// stays under the connection for its life (coder/websocket adds
		// its own): keep it small, as a peer may be one of a thousand.
		ReadBufferSize:    512,
		WriteBufferSize:   512,
		DisableKeepAlives: true,
		// The connection under the WebSocket is a batchConn: the Conn's
		// writer gathers several frames due into one write(2).
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			bc := newBatchConn(c)
			mu.Lock()
			raw = bc
			mu.Unlock()
			return bc, nil
		},
	}}
	// A peer that accepts TCP but never answers the upgrade must not hold
	// the dialer forever: the attempt fails and is retried with backoff.
	ctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	ws, resp, err := dialAside(ctx, url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: header})
	if err != nil {
		// net/http's errors repeat the URL, and its query may hold a token.
		err = &redactedError{err}
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, nil, &HTTPStatusError{Status: resp.StatusCode, Err: err}
		}
		return nil, nil, fmt.Errorf("dial %s: %w", RedactURL(url), err)
	}
	mu.Lock()
	defer mu.Unlock()
	return ws, raw, nil
}

// Handshakes bounds the handshakes in progress at once among the dials that
// share it. A thousand targets are dialed together when the upstream's
// self_id becomes known: unbounded, their handshakes (each with net/http's
// goroutines, deep stacks and buffers) are all in memory at once, and the
// process keeps that peak in its RSS long after (it was 20 KiB per target
// at 1000 targets). A dial waits at most HandshakeWait for a free one,
// then goes ahead beside them: peers that take their handshakes' whole
// HandshakeTimeout (a host that drops SYNs, a server that never answers the
// upgrade) can make the others late by that much and no more. A nil
// *Handshakes bounds nothing.
type Handshakes struct {
	slots chan struct{}
	wait  time.Duration
}

// HandshakeWait is the longest a dial waits for a free handshake.
const HandshakeWait = time.Second

// NewHandshakes returns a bound of n handshakes at once.
func NewHandshakes(n int) *Handshakes {
	return &Handshakes{slots: make(chan struct{}, n), wait: HandshakeWait}
}

// Dial is Dial once a handshake of h's is free or HandshakeWait has passed,
// or fails with ctx's cause if ctx ends first. The wait does not count
// against HandshakeTimeout.
func (h *Handshakes) Dial(ctx context.Context, url string, header http.Header) (*websocket.Conn, io.Closer, error) {
	if h != nil {
		wait := time.NewTimer(h.wait)
		defer wait.Stop()
		select {
		case h.slots <- struct{}{}:
			defer func() { <-h.slots }()
		case <-wait.C: // beside the handshakes in progress
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("dial %s: waiting for a free handshake: %w", RedactURL(url), context.Cause(ctx))
		}
	}
	return Dial(ctx, url, header)
}

// dialAside runs websocket.Dial on a goroutine of its own: net/http's
// client path is deep, and the caller's goroutine, which then reads the
// connection for its whole life, would keep the stack it grew to (16 KiB)
// where reading needs a fraction of that.
func dialAside(ctx context.Context, url string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	type dialed struct {
		ws   *websocket.Conn
		resp *http.Response
		err  error
	}
	ch := make(chan dialed, 1)
	go func() {
		ws, resp, err := websocket.Dial(ctx, url, opts)
		ch <- dialed{ws, resp, err}
	}()
	d := <-ch
	return d.ws, d.resp, d.err
}

// redactedError hides URL queries and userinfo (they may hold access_token
// or a password) in the text of the error it wraps.
type redactedError struct{ err error }

func (e *redactedError) Error() string { return RedactText(e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }

// Accept upgrades an HTTP request to a WebSocket connection and returns it
// with the network connection under it.
func Accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, io.Closer, error) {
	hw := &hijackRecorder{ResponseWriter: w}
	// A browser's request must come from the same origin (coder/websocket's
	// check; bots and implementations send no Origin): a web page open on
	// the host cannot reach obmux's servers.
	ws, err := websocket.Accept(hw, r, nil)
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
	if err != nil {
		return nil, nil, err
	}
	// The server's read (OBMUX_HTTP_TIMEOUT) and idle deadlines were for
	// the request; the WebSocket keeps its own time (keepalive).
	c.SetDeadline(time.Time{})
	// coder/websocket writes to the connection returned here (it resets
	// the writer of rw onto it): a batchConn, as for a dialed one.
	bc := newBatchConn(c)
	h.conn = bc
	return bc, rw, nil
}
