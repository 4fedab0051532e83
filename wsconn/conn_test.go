package wsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/internal/sim"
	"github.com/obmux/obmux/onebot"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// listen returns a simulated peer's server on 127.0.0.1, closed when t ends.
func listen(t *testing.T) *sim.Server {
	t.Helper()
	srv, err := sim.Listen("127.0.0.1:0", "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// pair returns a Conn dialed to a simulated peer.
func pair(t *testing.T, cfg Config) (*Conn, *sim.Peer) {
	t.Helper()
	srv := listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, raw, err := Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := srv.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := health.NewMonitor(health.NewMetrics(nil, "test")).Track(health.RoleTarget, "t")
	return New(ws, raw, st, slog.New(slog.NewTextHandler(io.Discard, nil)), cfg), peer
}

func run(c *Conn, handle Handler) chan health.Reason {
	done := make(chan health.Reason, 1)
	go func() {
		r, _ := c.Run(context.Background(), handle)
		done <- r
	}()
	return done
}

func recv(t *testing.T, p *sim.Peer) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := p.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The greeting comes first, queued frames in order, and a graceful close
// writes its final frame then the close code.
func TestGreetingQueueAndGracefulClose(t *testing.T) {
	c, p := pair(t, Config{QueueSize: 2, CloseTimeout: time.Second, ReadLimit: 1 << 20})
	c.SetGreeting([]byte(`{"hello":1}`))
	got := make(chan []byte, 1)
	done := run(c, func(b []byte) onebot.Kind { got <- b; return onebot.KindAPIRequest })
	if b := recv(t, p); string(b) != `{"hello":1}` {
		t.Fatalf("first frame %s", b)
	}
	c.Send([]byte(`{"n":1}`), onebot.KindAPIResponse)
	c.Send([]byte(`{"n":2}`), onebot.KindAPIResponse)
	for _, want := range []string{`{"n":1}`, `{"n":2}`} {
		if b := recv(t, p); string(b) != want {
			t.Fatalf("got %s want %s", b, want)
		}
	}
	p.Send(context.Background(), []byte(`{"action":"x"}`))
	select {
	case b := <-got:
		if string(b) != `{"action":"x"}` {
			t.Fatalf("read %s", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler not called")
	}
	c.Close(Disconnect{health.ReasonShutdown, websocket.StatusGoingAway, "bye"}, []byte(`{"last":1}`))
	if b := recv(t, p); string(b) != `{"last":1}` {
		t.Fatalf("final frame %s", b)
	}
	if r := <-done; r != health.ReasonShutdown {
		t.Errorf("reason %v", r)
	}
	<-p.Done
	if p.CloseStatus() != websocket.StatusGoingAway {
		t.Errorf("close %v", p.Err)
	}
	if got := testutil.ToFloat64(c.Stats().M.FramesIn[onebot.KindAPIRequest]); got != 1 {
		t.Errorf("frames in = %v", got)
	}
	if !c.Send([]byte(`{}`), onebot.KindAPIResponse) == false {
		t.Error("Send after the end must fail")
	}
}

// Close sends the Disconnect's code and text and records its reason; the
// frames still queued are not written but counted as dropped, disconnected.
func TestCloseDiscardsTheQueueCounted(t *testing.T) {
	c, p := pair(t, Config{QueueSize: 8, CloseTimeout: time.Second, ReadLimit: 1 << 20})
	for range 3 {
		if !c.Send([]byte(`{"queued":1}`), onebot.KindAPIResponse) { // the writer is not running yet
			t.Fatal("Send refused")
		}
	}
	c.Close(DisconnectSelfIDChanged, nil)
	if r := <-run(c, func([]byte) onebot.Kind { return onebot.KindInvalid }); r != health.ReasonSelfIDChanged {
		t.Errorf("reason %v, want self_id_changed", r)
	}
	<-p.Done
	var ce websocket.CloseError
	if !errors.As(p.Err, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "self_id changed" {
		t.Errorf("peer saw %v, want close 1000 \"self_id changed\"", p.Err)
	}
	for b := range p.Frames {
		t.Errorf("a discarded frame was written: %s", b)
	}
	m := c.Stats().M
	if got := testutil.ToFloat64(m.Dropped[health.DropDisconnected]); got != 3 {
		t.Errorf("dropped{disconnected} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.Disconnects[health.ReasonSelfIDChanged]); got != 1 {
		t.Errorf("disconnects{self_id_changed} = %v, want 1", got)
	}
}

// A full queue drops and counts; a stuck write ends the connection with
// write_error after WriteTimeout.
func TestQueueFullAndWriteTimeout(t *testing.T) {
	c, p := pair(t, Config{QueueSize: 1, WriteTimeout: 200 * time.Millisecond, CloseTimeout: time.Second, ReadLimit: 1 << 20})
	p.Pause()
	c.SetGreeting([]byte(`{}`)) // the peer's reader takes this one, then stops
	done := run(c, func([]byte) onebot.Kind { return onebot.KindInvalid })
	big := bytes.Repeat([]byte("z"), 1<<20)
	dropped := false
	deadline := time.Now().Add(5 * time.Second)
	for !dropped && time.Now().Before(deadline) {
		dropped = !c.Send(big, onebot.KindAPIResponse)
	}
	if !dropped || testutil.ToFloat64(c.Stats().M.Dropped[health.DropQueueFull]) == 0 {
		t.Fatal("a full queue did not drop")
	}
	// Keep feeding until the socket buffers are full and a write blocks.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			if r != health.ReasonWriteError {
				t.Errorf("reason %v, want write_error", r)
			}
			p.Close()
			return
		case <-tick.C:
			c.Send(big, onebot.KindAPIResponse)
		case <-time.After(5 * time.Second):
			t.Fatal("stuck write not detected")
		}
	}
}

// A failed dial never shows the URL's query, which may hold access_token.
func TestDialErrorHidesToken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, _, err = Dial(context.Background(), "ws://"+addr+"/x?access_token=SECRET", nil)
	if err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("the token is in the error: %v", err)
	}
}

// A peer that resets the connection (a RST, as from a process that exits
// with frames it has not read) ends it as closed_by_peer, as docs/metrics.md
// says ("the connection was lost (EOF, reset)"), not as read_error.
func TestPeerResetIsClosedByPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan *net.TCPConn, 1)
	handlerDone := make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer close(handlerDone)
			ws, err := websocket.Accept(w, r, nil)
			if err != nil {
				t.Error(err)
				return
			}
			ws.Read(context.Background()) // until the reset
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				accepted <- c.(*net.TCPConn)
			}
		},
	}
	go srv.Serve(ln)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, raw, err := Dial(ctx, "ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := health.NewMonitor(health.NewMetrics(nil, "test")).Track(health.RoleTarget, "t")
	c := New(ws, raw, st, slog.New(slog.DiscardHandler), Config{CloseTimeout: time.Second, ReadLimit: 1 << 20})
	done := run(c, func([]byte) onebot.Kind { return onebot.KindInvalid })
	tcp := <-accepted
	tcp.SetLinger(0) // close sends a RST
	tcp.Close()
	select {
	case r := <-done:
		if r != health.ReasonClosedByPeer {
			t.Errorf("reason %v, want closed_by_peer", r)
		}
	case <-ctx.Done():
		t.Fatal("the reset was not seen")
	}
	<-handlerDone
}

// SendThen's left runs once its frame has left the queue: after the write,
// or when the queue is discarded at the end; never for a refused frame.
func TestSendThenReportsTheFrameLeft(t *testing.T) {
	left := make(chan string, 8)
	leftFn := func(name string) func() { return func() { left <- name } }
	leftNext := func() string {
		t.Helper()
		select {
		case n := <-left:
			return n
		case <-time.After(5 * time.Second):
			t.Fatal("left not called")
			return ""
		}
	}
	// Written.
	c, p := pair(t, Config{QueueSize: 1, CloseTimeout: time.Second, ReadLimit: 1 << 20})
	done := run(c, func([]byte) onebot.Kind { return onebot.KindInvalid })
	if !c.SendThen([]byte(`{"n":"a"}`), onebot.KindAPIRequest, leftFn("a")) {
		t.Fatal("SendThen refused")
	}
	if b := recv(t, p); string(b) != `{"n":"a"}` {
		t.Fatalf("got %s", b)
	}
	if n := leftNext(); n != "a" {
		t.Fatalf("left %s, want a", n)
	}
	c.Close(DisconnectShutdown, nil)
	<-done
	<-p.Done

	// Discarded (the writer is not running yet), or refused.
	c, p = pair(t, Config{QueueSize: 2, CloseTimeout: time.Second, ReadLimit: 1 << 20})
	for _, n := range []string{"b", "c"} {
		if !c.SendThen([]byte(`{"n":"`+n+`"}`), onebot.KindAPIRequest, leftFn(n)) {
			t.Fatal("SendThen refused")
		}
	}
	if c.SendThen([]byte(`{"n":"d"}`), onebot.KindAPIRequest, leftFn("d")) {
		t.Fatal("a third frame fit a queue of 2")
	}
	c.Close(DisconnectShutdown, nil)
	if got := leftNext() + leftNext(); got != "bc" {
		t.Errorf("left %s for the discarded frames, want bc", got)
	}
	<-run(c, func([]byte) onebot.Kind { return onebot.KindInvalid })
	<-p.Done
	select {
	case n := <-left:
		t.Errorf("left called for %s too", n)
	default:
	}
}

// Handshakes lets n handshakes run at once: with one held by a peer that
// never answers the upgrade, another dial waits (here until its deadline,
// the peer it dials never sees it), or past HandshakeWait goes ahead
// beside it; once the first ends, the next takes the slot.
func TestHandshakesBoundsDialsAtOnce(t *testing.T) {
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := mute.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	srv := listen(t)
	hs := NewHandshakes(1)

	ctxA, cancelA := context.WithCancel(context.Background())
	dialedA := make(chan error, 1)
	go func() {
		_, _, err := hs.Dial(ctxA, "ws://"+mute.Addr().String()+"/", nil)
		dialedA <- err
	}()
	held := <-accepted // A has the slot: its handshake waits for an answer
	defer held.Close()

	ctxB, cancelB := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelB()
	if _, _, err := hs.Dial(ctxB, srv.URL+"?access_token=SECRET", nil); !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "waiting for a free handshake") || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("a dial with the only handshake taken: %v", err)
	}
	// Past HandshakeWait a dial goes ahead beside the handshake that holds
	// the slot: a peer that never answers delays the others by that much.
	short := &Handshakes{slots: hs.slots, wait: 10 * time.Millisecond}
	ctxC, cancelC := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelC()
	wsC, _, err := short.Dial(ctxC, srv.URL, nil)
	if err != nil {
		t.Fatalf("a dial past the handshake wait: %v", err)
	}
	pC, err := srv.Next(ctxC)
	if err != nil {
		t.Fatal(err)
	}
	pC.Close()
	wsC.CloseNow()
	select {
	case err := <-dialedA:
		t.Fatalf("the dial holding the slot ended (%v): the test proves nothing", err)
	default:
	}
	cancelA()
	if err := <-dialedA; err == nil {
		t.Fatal("the dial to a peer that never answers succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := hs.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatalf("the handshake freed was not taken: %v", err)
	}
	defer ws.CloseNow()
	p, err := srv.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if n := len(hs.slots); n != 0 {
		t.Errorf("%d handshakes still taken", n)
	}
}

// A write the kernel refused because the peer had gone (broken pipe, reset)
// ends the connection as closed_by_peer, as the reader would have called it;
// any other failed write is write_error. (CI saw a peer's close race a
// heartbeat: the write failed with EPIPE before the reader saw the close.)
func TestWriteFailedNamesThePeersEnd(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return fmt.Errorf("failed to write frame: %w", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", errno)})
	}
	for _, tc := range []struct {
		err  error
		want health.Reason
	}{
		{opErr(syscall.EPIPE), health.ReasonClosedByPeer},
		{opErr(syscall.ECONNRESET), health.ReasonClosedByPeer},
		{opErr(syscall.ENOBUFS), health.ReasonWriteError},
		{net.ErrClosed, health.ReasonWriteError},
		{errors.New("failed to write frame: boom"), health.ReasonWriteError},
	} {
		s := writeFailed(tc.err)
		if s.reason != tc.want || !errors.Is(s.err, tc.err) {
			t.Errorf("writeFailed(%v) = %v %v, want %v wrapping the error", tc.err, s.reason, s.err, tc.want)
		}
	}
}

// The reader's close frame replaces a cause the writer saw first when the
// write failed because the peer had gone, so that a refusal (a close with
// its code) is still one; obmux's own write timeout stands.
func TestPeersCloseFrameExplainsAFailedWrite(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return fmt.Errorf("failed to write frame: %w", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", errno)})
	}
	closeErr := fmt.Errorf("peer closed the connection: %w", websocket.CloseError{Code: websocket.StatusPolicyViolation, Reason: "Duplicate X-Self-ID"})
	for _, tc := range []struct {
		name     string
		first    *stopped
		replaced bool
	}{
		{"broken pipe", writeFailed(opErr(syscall.EPIPE)), true},
		{"reset", writeFailed(opErr(syscall.ECONNRESET)), true},
		{"other write error", writeFailed(opErr(syscall.ENOBUFS)), true},
		{"write timeout", &stopped{health.ReasonWriteError, errWriteTimeout}, false},
	} {
		var c Conn
		c.setCause(tc.first.reason, tc.first.err)
		c.setCause(health.ReasonClosedByPeer, closeErr)
		var ce websocket.CloseError
		if got := errors.As(c.err, &ce); got != tc.replaced {
			t.Errorf("%s, then the close frame: cause %v %v, close frame taken %v, want %v", tc.name, c.cause, c.err, got, tc.replaced)
		}
	}
}

// Cancelling Run ends the connection as shutdown, whatever the writer or
// the reader was doing when the connection closed under them (a heartbeat
// or a ping in flight, or due, used to end it as write_error).
func TestCancelIsShutdown(t *testing.T) {
	for i := range 40 {
		// A long ping timeout: the peer stops reading (and answering pings) once
		// its frame buffer is full, and that must not end the connection first.
		c, p := pair(t, Config{PingInterval: 2 * time.Millisecond, PingTimeout: time.Minute})
		c.SetHeartbeat(time.Millisecond, func() []byte { return []byte(`{"post_type":"meta_event","meta_event_type":"heartbeat"}`) })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan health.Reason, 1)
		go func() {
			r, _ := c.Run(ctx, func([]byte) onebot.Kind { return onebot.KindEvent })
			done <- r
		}()
		recv(t, p)
		recv(t, p) // heartbeats are flowing
		cancel()
		if r := <-done; r != health.ReasonShutdown {
			t.Fatalf("run %d: cancelled Run ended as %v, want shutdown", i, r)
		}
		p.Close()
	}
}
