package proxy

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/internal/sim"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/wsconn"
)

// recordSink is a Sink that records the events and changes of account.
type recordSink struct {
	events  chan []byte
	changed chan int64
}

func (s *recordSink) Event(b []byte)         { s.events <- bytes.Clone(b) }
func (s *recordSink) SelfIDChanged(id int64) { s.changed <- id }

// waitState waits until the upstream's state satisfies ok.
func waitState(t *testing.T, u *Upstream, what string, ok func(State) bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s, changed := u.State()
		if ok(s) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("upstream never %s (state %+v)", what, s)
		}
	}
}

// The upstream, dialed to a simulated implementation: it sends the token,
// learns the self_id from get_login_info, keeps the heartbeat's status,
// hands events (and nothing else) to the Sink, routes an API call both ways,
// and when the implementation goes away answers the pending call with 1502
// and redials.
func TestUpstreamDialServesAndRedials(t *testing.T) {
	impl, err := sim.Listen("127.0.0.1:0", "/")
	if err != nil {
		t.Fatal(err)
	}
	defer impl.Close()
	log := testLog()
	mon := health.NewMonitor(health.NewMetrics(nil, "test"))
	router := NewRouter(time.Minute, Limits{Calls: 10}, log)
	sink := &recordSink{events: make(chan []byte, 16), changed: make(chan int64, 4)}
	u := NewUpstream(UpstreamConfig{URL: impl.URL, Token: "tok", UserAgent: "obmux/test",
		Conn:    wsconn.Config{CloseTimeout: time.Second, ReadLimit: 1 << 20, QueueSize: 16},
		Backoff: wsconn.Backoff{Min: time.Millisecond, Max: 50 * time.Millisecond}}, NewUpstreamState(), router, sink, mon, log)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { u.Run(ctx); close(done) }()

	p, err := impl.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Header.Get("Authorization"); got != "Bearer tok" {
		t.Errorf("Authorization %q", got)
	}
	req, err := p.Next(ctx)
	if err != nil || !bytes.Contains(req, []byte(`"get_login_info"`)) {
		t.Fatalf("first frame %s, %v; want get_login_info", req, err)
	}
	p.Send(ctx, sim.Answer(10001, req))
	waitState(t, u, "learned self_id 10001", func(s State) bool { return s.Online && s.SelfID == 10001 })

	p.Send(ctx, []byte(`{"time":1,"self_id":10001,"post_type":"meta_event","meta_event_type":"heartbeat","interval":5000,"status":{"online":true,"good":false}}`))
	waitState(t, u, "took the heartbeat's good:false", func(s State) bool { return !s.Status.Good })
	p.Send(ctx, sim.Lifecycle(10001, "connect"))
	p.Send(ctx, sim.PrivateMessage(10001, 42, 1, "hi"))
	select {
	case ev := <-sink.events:
		if !bytes.Contains(ev, []byte(`"message_id":1`)) {
			t.Errorf("the sink got %s, want the message (not the heartbeat or lifecycle)", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event did not reach the sink")
	}

	c := caller("bot")
	requestRaw(t, router, c, `{"action":"send_msg","params":{},"echo":"mine"}`)
	call, err := p.Next(ctx)
	if err != nil || !bytes.Contains(call, []byte(`"echo":"obmux:`)) {
		t.Fatalf("upstream got %s, %v", call, err)
	}
	p.Send(ctx, sim.Answer(10001, call))
	if got := c.frame(t); !bytes.Contains(got, []byte(`"echo":"mine"`)) || !bytes.Contains(got, []byte(`"status":"ok"`)) {
		t.Errorf("caller got %s", got)
	}

	requestRaw(t, router, c, `{"action":"send_msg","params":{},"echo":"lost"}`)
	if _, err := p.Next(ctx); err != nil {
		t.Fatal(err)
	}
	p.Close()
	expectFailure(t, c.frame(t), onebot.RetcodeUpstreamDown, `"lost"`)
	p2, err := impl.Next(ctx)
	if err != nil {
		t.Fatalf("not redialed: %v", err)
	}
	if n := testutil.ToFloat64(mon.Metrics().LastEvent()); n == 0 {
		t.Error("the last event's time was not set")
	}
	cancel()
	<-done
	p2.Close()
	u.Close(context.Background())
	if len(sink.changed) != 0 {
		t.Errorf("SelfIDChanged called for the first self_id")
	}
}
