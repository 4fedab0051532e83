// Package sim simulates the OneBot programs around obmux, over real
// WebSockets on 127.0.0.1: an implementation's forward-WS server, framework
// reverse-WS servers and forward-WS clients, and the hostile peers of soak
// runs (UnreadFlood and the others). The demo, the benchmark and the tests
// use it.
package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"
)

// ReadLimit is the read limit of every simulated connection.
const ReadLimit = 64 << 20

// Peer is one simulated WebSocket connection. A reader goroutine puts every
// message on Frames; when Frames is full, or while Paused, the reader stops
// reading from the socket, so the other side sees a peer that does not read
// (and does not answer pings).
type Peer struct {
	WS *websocket.Conn
	// Header holds the request headers the server side saw.
	Header http.Header
	// Frames receives every message read.
	Frames chan []byte
	// Done is closed when the connection has ended; Err then says how.
	Done chan struct{}
	Err  error

	pauseMu sync.Mutex
	paused  chan struct{}
	quit    chan struct{}
	once    sync.Once
}

func newPeer(ws *websocket.Conn, h http.Header, buffer int) *Peer {
	ws.SetReadLimit(ReadLimit)
	p := &Peer{WS: ws, Header: h, Frames: make(chan []byte, buffer), Done: make(chan struct{}), quit: make(chan struct{})}
	go p.read()
	return p
}

func (p *Peer) read() {
	defer close(p.Done)
	for {
		p.pauseMu.Lock()
		paused := p.paused
		p.pauseMu.Unlock()
		if paused != nil {
			select {
			case <-paused:
			case <-p.quit:
			}
		}
		_, b, err := p.WS.Read(context.Background())
		if err != nil {
			p.Err = err
			close(p.Frames)
			return
		}
		select {
		case p.Frames <- b:
		case <-p.quit:
			p.Err = errors.New("closed by the test")
			close(p.Frames)
			return
		}
	}
}

// Pause stops the reader before its next read until Resume. A read already
// waiting goes on (answering pings) until one more message arrives: send the
// peer a message to make the pause bite.
func (p *Peer) Pause() {
	p.pauseMu.Lock()
	defer p.pauseMu.Unlock()
	if p.paused == nil {
		p.paused = make(chan struct{})
	}
}

// Resume lets a paused reader go on.
func (p *Peer) Resume() {
	p.pauseMu.Lock()
	defer p.pauseMu.Unlock()
	if p.paused != nil {
		close(p.paused)
		p.paused = nil
	}
}

// Send writes one text message.
func (p *Peer) Send(ctx context.Context, b []byte) error {
	return p.WS.Write(ctx, websocket.MessageText, b)
}

// Next returns the next message, or an error when ctx is done or the
// connection ended.
func (p *Peer) Next(ctx context.Context) ([]byte, error) {
	select {
	case b, ok := <-p.Frames:
		if !ok {
			return nil, fmt.Errorf("connection ended: %w", p.Err)
		}
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close closes the connection at once and waits for the reader.
func (p *Peer) Close() {
	p.once.Do(func() { close(p.quit) })
	p.WS.CloseNow()
	<-p.Done
}

// CloseStatus returns the close code the other side sent, or -1.
func (p *Peer) CloseStatus() websocket.StatusCode { return websocket.CloseStatus(p.Err) }

// Dial connects to url as a client with header.
func Dial(ctx context.Context, url string, header http.Header) (*Peer, *http.Response, error) {
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		return nil, resp, err
	}
	return newPeer(ws, nil, 1024), resp, nil
}

// Server is a WebSocket server on 127.0.0.1 whose accepted connections come
// out of Accepted.
type Server struct {
	// URL is ws://127.0.0.1:port followed by the path.
	URL  string
	Addr string
	// Accepted receives every accepted connection.
	Accepted chan *Peer
	// Check, if set, may refuse a request with an HTTP status (0: accept).
	Check func(r *http.Request) int

	ws    *WSServer
	mu    sync.Mutex
	peers []*Peer
}

// FreeAddr returns an address on 127.0.0.1 whose port was free a moment
// ago, for a program that must be told where to listen before it starts.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Listen starts a Server at addr ("127.0.0.1:0" for any port) serving path
// ("/": every path).
func Listen(addr, path string) (*Server, error) {
	s := &Server{Accepted: make(chan *Peer, 64)}
	check := func(r *http.Request) int {
		if path != "/" && r.URL.Path != path {
			return http.StatusNotFound
		}
		if s.Check != nil {
			return s.Check(r)
		}
		return 0
	}
	ws, err := ListenWS(addr, check, s.serve)
	if err != nil {
		return nil, err
	}
	s.ws, s.URL, s.Addr = ws, ws.URL+path, ws.Addr
	return s, nil
}

// serve hands the connection to Next as a Peer, for as long as it lasts.
func (s *Server) serve(r *http.Request, ws *websocket.Conn) {
	p := newPeer(ws, r.Header.Clone(), 1024)
	s.mu.Lock()
	s.peers = append(s.peers, p)
	s.mu.Unlock()
	select {
	case s.Accepted <- p:
	default:
		p.Close()
	}
	<-p.Done
}

// Next returns the next accepted connection.
func (s *Server) Next(ctx context.Context) (*Peer, error) {
	select {
	case p := <-s.Accepted:
		return p, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no connection accepted: %w", ctx.Err())
	}
}

// Close stops the server and closes every connection it accepted.
func (s *Server) Close() {
	s.ws.Close()
	s.mu.Lock()
	peers := s.peers
	s.peers = nil
	s.mu.Unlock()
	for _, p := range peers {
		p.Close()
	}
}
