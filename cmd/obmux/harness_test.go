package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/obmux/obmux/config"
	"github.com/obmux/obmux/internal/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { removeBinary() })) }

const testSelfID = 10001

// wait is how long any test waits for one thing to happen.
const wait = 10 * time.Second

// logBuffer collects obmux's log; it is printed when a test fails.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// instance is obmux running in-process through serve.
type instance struct {
	t      *testing.T
	addrs  listenAddrs
	cancel context.CancelFunc
	done   chan error
	log    *logBuffer
	cfg    config.Config
	once   sync.Once
	took   time.Duration
}

// start runs obmux with env ("OBMUX_X=v") over test defaults and stops it at
// the end of the test.
func start(t *testing.T, env ...string) *instance {
	t.Helper()
	defaults := []string{"OBMUX_METRICS_LISTEN=127.0.0.1:0", "OBMUX_UPSTREAM_LISTEN=127.0.0.1:0",
		"OBMUX_LOG_FORMAT=json", "OBMUX_LOG_LEVEL=debug", "OBMUX_RECONNECT_MIN=20ms", "OBMUX_RECONNECT_MAX=200ms",
		"OBMUX_SHUTDOWN_TIMEOUT=5s"}
	cfg, err := config.Load(append(defaults, env...))
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{t: t, done: make(chan error, 1), log: &logBuffer{}, cfg: cfg}
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	ready := make(chan listenAddrs, 1)
	go func() { in.done <- serve(ctx, cfg, in.log, func(a listenAddrs) { ready <- a }) }()
	select {
	case in.addrs = <-ready:
	case err := <-in.done:
		t.Fatalf("obmux did not start: %v", err)
	}
	t.Cleanup(func() {
		in.stop()
		if t.Failed() {
			t.Logf("obmux log:\n%s", in.log.String())
		}
	})
	return in
}

// stop shuts obmux down and waits for it, returning how long it took.
func (in *instance) stop() time.Duration {
	in.once.Do(func() {
		begin := time.Now()
		in.cancel()
		select {
		case err := <-in.done:
			if err != nil {
				in.t.Errorf("serve returned %v", err)
			}
		case <-time.After(wait + in.cfg.ShutdownTimeout):
			in.t.Fatal("obmux did not stop")
		}
		in.took = time.Since(begin)
	})
	return in.took
}

// metrics scrapes /metrics.
func (in *instance) metrics() map[string]*dto.MetricFamily {
	in.t.Helper()
	resp, err := http.Get("http://" + in.addrs.Metrics + "/metrics")
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		in.t.Fatal(err)
	}
	return mf
}

// series returns the series of name whose labels include labels ("k=v"
// pairs).
func (in *instance) series(name string, labels ...string) []*dto.Metric {
	in.t.Helper()
	mf := in.metrics()[name]
	if mf == nil {
		return nil
	}
	var out []*dto.Metric
next:
	for _, m := range mf.Metric {
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			found := false
			for _, lp := range m.Label {
				found = found || lp.GetName() == k && lp.GetValue() == v
			}
			if !found {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// metric returns the sum of the series of name whose labels include labels
// ("k=v" pairs), or 0; a histogram counts its samples.
func (in *instance) metric(name string, labels ...string) float64 {
	in.t.Helper()
	sum := 0.0
	for _, m := range in.series(name, labels...) {
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// get fetches path from the metrics listener.
func (in *instance) get(path string) (int, string) {
	in.t.Helper()
	resp, err := http.Get("http://" + in.addrs.Metrics + path)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for an event
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// upstream is a simulated OneBot implementation with a forward-WS server.
type upstream struct {
	*sim.Server
	t        *testing.T
	selfID   atomic.Int64
	silent   atomic.Bool // do not answer API calls
	mu       sync.Mutex
	peer     *sim.Peer
	conns    chan *sim.Peer
	requests chan []byte
	wg       sync.WaitGroup
	custom   func(p *sim.Peer, req []byte) bool
	done     chan struct{}
	once     sync.Once
}

// newUpstream starts a simulated implementation on addr (127.0.0.1:0 for any).
// It sends lifecycle connect on every connection and answers API calls with
// sim.Answer unless silent.
func newUpstream(t *testing.T, addr string) *upstream {
	t.Helper()
	s, err := sim.Listen(addr, "/")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{Server: s, t: t, conns: make(chan *sim.Peer, 16), requests: make(chan []byte, 4096), done: make(chan struct{})}
	u.selfID.Store(testSelfID)
	done := u.done
	u.wg.Go(func() {
		for {
			select {
			case p := <-s.Accepted:
				u.mu.Lock()
				u.peer = p
				u.mu.Unlock()
				p.Send(context.Background(), sim.Lifecycle(u.selfID.Load(), "connect"))
				u.conns <- p
				u.wg.Go(func() { u.answer(p) })
			case <-done:
				return
			}
		}
	})
	t.Cleanup(u.Close)
	return u
}

// Close stops the simulated implementation and drops its connections.
func (u *upstream) Close() {
	u.once.Do(func() {
		close(u.done)
		u.Server.Close()
		u.wg.Wait()
	})
}

func (u *upstream) answer(p *sim.Peer) {
	for req := range p.Frames {
		select {
		case u.requests <- req:
		default:
		}
		if u.custom != nil && u.custom(p, req) {
			continue
		}
		if !u.silent.Load() {
			p.Send(context.Background(), sim.Answer(u.selfID.Load(), req))
		}
	}
}

// connected waits for obmux to connect.
func (u *upstream) connected() *sim.Peer {
	u.t.Helper()
	select {
	case p := <-u.conns:
		return p
	case <-time.After(wait):
		u.t.Fatal("obmux did not connect to the upstream")
		return nil
	}
}

// send sends an event on the current connection.
func (u *upstream) send(b []byte) {
	u.t.Helper()
	u.mu.Lock()
	p := u.peer
	u.mu.Unlock()
	if err := p.Send(context.Background(), b); err != nil {
		u.t.Fatal(err)
	}
}

// target is a simulated framework's reverse-WS server.
type target struct {
	*sim.Server
	t *testing.T
}

func newTarget(t *testing.T) *target {
	t.Helper()
	s, err := sim.Listen("127.0.0.1:0", "/onebot/v11/ws")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &target{Server: s, t: t}
}

// accept waits for obmux's connection and checks it starts with lifecycle
// connect.
func (tg *target) accept() *sim.Peer {
	tg.t.Helper()
	p, err := tg.Next(ctxT(tg.t))
	if err != nil {
		tg.t.Fatal(err)
	}
	first := next(tg.t, p)
	if !strings.Contains(string(first), `"meta_event_type":"lifecycle","sub_type":"connect"`) {
		tg.t.Fatalf("first frame is not lifecycle connect: %s", first)
	}
	return p
}

// next returns the next frame of p.
func next(t *testing.T, p *sim.Peer) []byte {
	t.Helper()
	b, err := p.Next(ctxT(t))
	if err != nil {
		t.Fatalf("no frame: %v", err)
	}
	return b
}

// nextEvent returns the next frame of p that is not a heartbeat.
// It fails the test when none comes within wait: heartbeats do not extend
// the wait.
func nextEvent(t *testing.T, p *sim.Peer) []byte {
	t.Helper()
	ctx := ctxT(t)
	for {
		b, err := p.Next(ctx)
		if err != nil {
			t.Fatalf("no event (only heartbeats, if anything) within %s: %v", wait, err)
		}
		if !bytes.Contains(b, []byte(`"meta_event_type":"heartbeat"`)) {
			return b
		}
	}
}

func event(n int) []byte {
	return sim.PrivateMessage(testSelfID, 20002, int64(n), fmt.Sprintf("message %d [&]", n))
}

// faultProxy puts a sim.FaultProxy in front of addr for the test.
func faultProxy(t *testing.T, addr string) *sim.FaultProxy {
	t.Helper()
	fp, err := sim.NewFaultProxy(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fp.Close)
	return fp
}
