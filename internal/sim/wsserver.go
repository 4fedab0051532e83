package sim

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// WSServer is an HTTP server that upgrades every request it accepts to a
// WebSocket and hands it to its serve func on the request's goroutine. The
// connection is cut when serve returns, and every connection when the
// server closes. Server (simulated peers) and the benchmark's frameworks are
// WSServers.
type WSServer struct {
	// URL is ws://Addr, without a path.
	URL  string
	Addr string

	srv  *http.Server
	done chan struct{}

	mu    sync.Mutex
	conns map[*websocket.Conn]struct{} // nil once closed
}

// ListenWS starts a WSServer at addr ("127.0.0.1:0" for any port). check, if
// not nil, may refuse a request before the upgrade with an HTTP status (0:
// accept). Every connection reads messages of up to ReadLimit bytes.
func ListenWS(addr string, check func(r *http.Request) int, serve func(r *http.Request, ws *websocket.Conn)) (*WSServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &WSServer{URL: "ws://" + ln.Addr().String(), Addr: ln.Addr().String(), done: make(chan struct{}),
		conns: map[*websocket.Conn]struct{}{}}
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if check != nil {
			if code := check(r); code != 0 {
				http.Error(w, http.StatusText(code), code)
				return
			}
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		ws.SetReadLimit(ReadLimit)
		if !s.track(ws) {
			ws.CloseNow()
			return
		}
		defer s.untrack(ws)
		serve(r, ws)
	})}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// track records ws, or reports false once the server is closed.
func (s *WSServer) track(ws *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		return false
	}
	s.conns[ws] = struct{}{}
	return true
}

// untrack forgets ws and cuts it.
func (s *WSServer) untrack(ws *websocket.Conn) {
	s.mu.Lock()
	delete(s.conns, ws)
	s.mu.Unlock()
	ws.CloseNow()
}

// Close stops the server and cuts every connection (no close handshake:
// coder/websocket's Close would wait for a peer that does not read).
func (s *WSServer) Close() {
	s.srv.Close()
	<-s.done
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for ws := range conns {
		ws.CloseNow()
	}
}
