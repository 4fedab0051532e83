package fanout

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/internal/sim"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/proxy"
	"github.com/obmux/obmux/wsconn"
)

// fixedState is a StateSource that never changes.
type fixedState proxy.State

func (s fixedState) State() (proxy.State, <-chan struct{}) { return proxy.State(s), nil }

// A forward client is not replayed: every event broadcast while it was
// connected is either written to it or, when it goes away first, counted
// as dropped, disconnected.
func TestClientGoneCountsItsEvents(t *testing.T) {
	metrics := health.NewMetrics(nil, "test")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := NewHub(Config{QueueSize: 1 << 12, QueueBytes: 1 << 30, Slow: SlowDisconnect, ReplaySize: 1 << 12, ReplayBytes: 1 << 30,
		ReplayMaxAge: time.Minute, Conn: wsconn.Config{CloseTimeout: time.Second, ReadLimit: 1 << 20, QueueSize: 16}},
		fixedState{Online: true, SelfID: 10001}, proxy.NewRouter(time.Second, proxy.Limits{Calls: 16}, log), health.NewMonitor(metrics), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h.NewServer(ServerConfig{})}
	go srv.Serve(ln)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, _, err := sim.Dial(ctx, "ws://"+ln.Addr().String()+"/event", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Next(ctx); err != nil { // the greeting
		t.Fatal(err)
	}
	p.Pause()
	const events = 400 // 25 MiB: more than the sockets hold
	frame := []byte(`{"post_type":"message","raw_message":"` + strings.Repeat("x", 64<<10) + `"}`)
	for range events {
		h.Event(frame)
	}
	p.Close()
	h.Close(ctx) // waits for the client's connection to end
	m := metrics.Conn(health.RoleClient, "/event")
	written, dropped := testutil.ToFloat64(m.FramesOut[onebot.KindEvent]), testutil.ToFloat64(m.Dropped[health.DropDisconnected])
	if written+dropped != events || dropped == 0 {
		t.Errorf("%v events written and %v dropped (disconnected), want %d in all, some dropped", written, dropped, events)
	}
}
