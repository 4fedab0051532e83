package wsconn

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
)

// countSource hands out n copies of frame, a batch at a time, and closes
// done when the last was written.
type countSource struct {
	frame []byte
	next  uint64
	n     uint64
	done  chan struct{}
}

func (s *countSource) Pull(dst []Item) []Item {
	for s.next < s.n && len(dst) < cap(dst) {
		dst = append(dst, Item{Seq: s.next, Frame: s.frame})
		s.next++
	}
	return dst
}

func (s *countSource) Wrote(seq uint64) {
	if seq == s.n-1 {
		close(s.done)
	}
}

// discardServer accepts WebSockets on 127.0.0.1 and reads and drops every
// message.
func discardServer(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		for {
			_, rd, err := ws.Reader(context.Background())
			if err != nil {
				return
			}
			io.Copy(io.Discard, rd)
		}
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "ws://" + ln.Addr().String() + "/"
}

// The writer's per-event path: events pulled from a Source and written,
// with keepalive and heartbeat timers armed (as every peer has them).
func BenchmarkWriteEvents(b *testing.B) {
	url := discardServer(b)
	ws, raw, err := Dial(context.Background(), url, nil)
	if err != nil {
		b.Fatal(err)
	}
	st := health.NewMonitor(health.NewMetrics(nil, "test")).Track(health.RoleTarget, "t")
	c := New(ws, raw, st, slog.New(slog.NewTextHandler(io.Discard, nil)), Config{PingInterval: time.Minute, PingTimeout: time.Minute,
		WriteTimeout: time.Minute, CloseTimeout: time.Second, ReadLimit: 1 << 20, QueueSize: 8})
	c.SetHeartbeat(time.Minute, func() []byte { return []byte(`{}`) })
	src := &countSource{frame: make([]byte, 300), n: uint64(b.N), done: make(chan struct{})}
	for i := range src.frame {
		src.frame[i] = 'x'
	}
	c.SetSource(src)
	b.SetBytes(int64(len(src.frame)))
	b.ReportAllocs()
	b.ResetTimer()
	ended := make(chan struct{})
	go func() {
		c.Run(context.Background(), func([]byte) onebot.Kind { return onebot.KindInvalid })
		close(ended)
	}()
	<-src.done
	b.StopTimer()
	c.Abort(DisconnectShutdown, nil)
	<-ended
}

// oneSource hands out one event at a time, when the benchmark offers it,
// and reports each written on wrote.
type oneSource struct {
	frame []byte
	due   atomic.Bool
	seq   uint64
	wrote chan struct{}
}

func (s *oneSource) Pull(dst []Item) []Item {
	if s.due.CompareAndSwap(true, false) {
		s.seq++
		dst = append(dst, Item{Seq: s.seq, Frame: s.frame})
	}
	return dst
}

func (s *oneSource) Wrote(uint64) { s.wrote <- struct{}{} }

// The writer's path at a moderate rate: each event finds the writer
// waiting, wakes it (as the hub's Event does), and is written alone; the
// benchmark waits for it before offering the next. Keepalive and heartbeat
// timers armed, as every peer has them.
func BenchmarkWakeWriteOne(b *testing.B) {
	url := discardServer(b)
	ws, raw, err := Dial(context.Background(), url, nil)
	if err != nil {
		b.Fatal(err)
	}
	st := health.NewMonitor(health.NewMetrics(nil, "test")).Track(health.RoleTarget, "t")
	c := New(ws, raw, st, slog.New(slog.NewTextHandler(io.Discard, nil)), Config{PingInterval: time.Minute, PingTimeout: time.Minute,
		WriteTimeout: time.Minute, CloseTimeout: time.Second, ReadLimit: 1 << 20, QueueSize: 8})
	c.SetHeartbeat(time.Minute, func() []byte { return []byte(`{}`) })
	src := &oneSource{frame: bytes.Repeat([]byte("x"), 300), wrote: make(chan struct{}, 1)}
	c.SetSource(src)
	ended := make(chan struct{})
	go func() {
		c.Run(context.Background(), func([]byte) onebot.Kind { return onebot.KindInvalid })
		close(ended)
	}()
	b.ReportAllocs()
	for b.Loop() {
		src.due.Store(true)
		c.Wake()
		<-src.wrote
	}
	c.Abort(DisconnectShutdown, nil)
	<-ended
}
