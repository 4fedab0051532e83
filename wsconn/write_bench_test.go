package wsconn

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
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
