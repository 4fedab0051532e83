package fanout

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/internal/sim"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/policy"
	"github.com/obmux/obmux/proxy"
	"github.com/obmux/obmux/wsconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRingBounds(t *testing.T) {
	r := newRing(3, 10)
	for i := range 5 {
		r.push([]byte{byte('a' + i)}, nil, 0)
	}
	if r.first != 3 || r.next != 6 || string(r.get(3).frame) != "c" {
		t.Fatalf("count bound: first %d next %d", r.first, r.next)
	}
	if got := r.bytesFrom(4); got != 2 {
		t.Errorf("bytesFrom(4) = %d", got)
	}
	r.push(make([]byte, 9), nil, 0) // 9 bytes: only it and at most 1 more byte fit
	if r.bytes > 10 || r.next-r.first != 2 {
		t.Errorf("byte bound: %d bytes, %d events", r.bytes, r.next-r.first)
	}
	r.push(make([]byte, 50), nil, 0) // larger than the bound: the newest is always kept
	if r.next-r.first != 1 || r.bytes != 50 {
		t.Errorf("oversized event: %d bytes, %d events", r.bytes, r.next-r.first)
	}
}

// newTestHub returns a hub and n peer connections attached to it that are
// never run, so that Event's own cost can be measured.
func newTestHub(tb testing.TB, n int) (*Hub, func()) {
	tb.Helper()
	return newPolicyHub(tb, make([]*policy.Policy, n))
}

// newPolicyHub is newTestHub with a peer for each of ps (nil: the zero
// Policy), and their Ingest.
func newPolicyHub(tb testing.TB, ps []*policy.Policy) (*Hub, func()) {
	tb.Helper()
	n := len(ps)
	srv, err := sim.Listen("127.0.0.1:0", "/")
	if err != nil {
		tb.Fatal(err)
	}
	mon := health.NewMonitor(health.NewMetrics(nil, "test"))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var some []*policy.Policy
	for _, p := range ps {
		if p != nil {
			some = append(some, p)
		}
	}
	h := NewHub(Config{QueueSize: 1 << 16, QueueBytes: 1 << 62, Slow: SlowDropOldest, ReplaySize: 1024, ReplayBytes: 1 << 30,
		ReplayMaxAge: time.Minute, Ingest: policy.NewIngest(some...)}, proxy.NewUpstreamState(), proxy.NewRouter(time.Second, proxy.Limits{Calls: 16}, log), mon, log)
	var conns []*websocket.Conn
	for i := range n {
		ws, _, err := websocket.Dial(context.Background(), srv.URL, nil)
		if err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, ws)
		st := mon.Track(health.RoleTarget, fmt.Sprint("t", i))
		h.attach(wsconn.New(ws, nil, st, log, wsconn.Config{QueueSize: 1}), st, 0, ps[i])
	}
	return h, func() {
		for _, ws := range conns {
			ws.CloseNow()
		}
		srv.Close()
	}
}

// Broadcasting allocates nothing per event, whatever the number of peers:
// the frame is appended once and shared.
func BenchmarkBroadcast(b *testing.B) {
	frame := make([]byte, 300)
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			h, stop := newTestHub(b, n)
			defer stop()
			b.ReportAllocs()
			for b.Loop() {
				h.Event(frame)
			}
		})
	}
}

// formatPolicies returns n policies, half wanting arrays and half strings
// (each half with its own group list when groups is true).
func formatPolicies(n int, groups bool) []*policy.Policy {
	var ps []*policy.Policy
	for i := range n {
		p := &policy.Policy{MessageFormat: onebot.FormatArray}
		if i%2 == 1 {
			p.MessageFormat = onebot.FormatString
		}
		if groups {
			p.Groups = []int64{int64(111 + i%2)}
		}
		ps = append(ps, p)
	}
	return ps
}

const formatFrame = `{"self_id":10001,"user_id":20002,"time":1790000101,"message_id":1,"message_type":"group","sender":{"user_id":20002,"nickname":"a","role":"owner"},` +
	`"raw_message":"[CQ:at,qq=10001] 集合见群公告&#91;置顶&#93;，带水&amp;零食","font":14,"sub_type":"normal",` +
	`"message":[{"type":"at","data":{"qq":"10001"}},{"type":"text","data":{"text":" 集合见群公告[置顶]，带水&零食"}}],"message_format":"array","post_type":"message","group_id":111}`

// The per-event path, ingest to every peer's Pull: with no policy, with
// group filters only, and with half the peers wanting strings (one
// conversion per event, shared).
func BenchmarkEventToPeers(b *testing.B) {
	frame := []byte(formatFrame)
	for _, c := range []struct {
		name string
		ps   []*policy.Policy
	}{
		{"plain", make([]*policy.Policy, 10)},
		{"groups", func() []*policy.Policy {
			ps := formatPolicies(10, true)
			for _, p := range ps {
				p.MessageFormat = onebot.FormatAsIs
			}
			return ps
		}()},
		{"groups+formats", formatPolicies(10, true)},
		{"formats", formatPolicies(10, false)},
	} {
		b.Run(c.name+"/targets=10", func(b *testing.B) {
			h, stop := newPolicyHub(b, c.ps)
			defer stop()
			cursors := *h.list.Load()
			buf := make([]wsconn.Item, 0, 16)
			b.ReportAllocs()
			for b.Loop() {
				h.Event(frame)
				for _, cur := range cursors {
					if out := cur.Pull(buf[:0]); len(out) > 0 {
						cur.Wrote(out[len(out)-1].Seq)
					}
				}
			}
		})
	}
}

// The other form of an event counts in the ring's bytes, and each peer
// pulls the event in its format.
func TestRingCountsTheOtherForm(t *testing.T) {
	ps := formatPolicies(2, false)
	h, stop := newPolicyHub(t, ps)
	defer stop()
	frame := []byte(formatFrame)
	h.Event(frame)
	h.mu.Lock()
	e := h.ring.get(h.ring.first)
	extra := h.ring.bytes - int64(cap(frame))
	h.mu.Unlock()
	if extra <= 0 || extra != e.ev.Bytes() {
		t.Errorf("the ring counts %d bytes beyond the frame, the string form holds %d", extra, e.ev.Bytes())
	}
	for _, cur := range *h.list.Load() {
		got := cur.Pull(make([]wsconn.Item, 0, 4))
		if len(got) != 1 {
			t.Fatalf("pulled %d", len(got))
		}
		var i int
		fmt.Sscanf(cur.stats.Name, "t%d", &i)
		switch b := got[0].Frame; ps[i].MessageFormat {
		case onebot.FormatArray:
			if &b[0] != &frame[0] {
				t.Errorf("the array bot got a copy: %s", b)
			}
		case onebot.FormatString:
			if !bytes.Contains(b, []byte(`"message":"[CQ:at,qq=10001] 集合见群公告&#91;置顶&#93;，带水&amp;零食","message_format":"string"`)) {
				t.Errorf("the string bot got %s", b)
			}
		}
	}
}

func TestBroadcastDoesNotAllocatePerTarget(t *testing.T) {
	frame := make([]byte, 1<<20)
	for _, n := range []int{1, 50} {
		h, stop := newTestHub(t, n)
		if a := testing.AllocsPerRun(100, func() { h.Event(frame) }); a != 0 {
			t.Errorf("%d targets: %v allocations per event, want 0", n, a)
		}
		stop()
	}
}

// A reconnect whose replay is cut short before anything was written resumes
// from the same point next time: the missed events are not skipped.
func TestReplayCutShortIsNotSkipped(t *testing.T) {
	h, stop := newTestHub(t, 0)
	defer stop()
	conn := testConn(t)
	st := h.mon.Track(health.RoleTarget, "a")
	first := h.attach(conn(st), st, 0, nil)
	for range 5 {
		h.Event([]byte(`{}`))
	}
	first.Wrote(2) // events 1 and 2 written, then the connection broke
	resume := h.detach(first, true)
	if resume != 3 {
		t.Fatalf("resume after writing 1..2: %d, want 3", resume)
	}
	second := h.attach(conn(st), st, resume, nil)
	if got := h.detach(second, true); got != resume {
		t.Fatalf("a reconnect that wrote nothing resumes from %d, want %d (events 3..5 would be lost)", got, resume)
	}
	third := h.attach(conn(st), st, resume, nil)
	if third.next != resume {
		t.Fatalf("replay starts at %d, want %d", third.next, resume)
	}
	h.detach(third, true)
	stb := h.mon.Track(health.RoleTarget, "b")
	fresh := h.attach(conn(stb), stb, 0, nil)
	if got := h.detach(fresh, true); got != 6 {
		t.Fatalf("a first connection that wrote nothing resumes from %d, want 6 (no replay of events before it came)", got)
	}
}

// testConn returns a func that makes wsconn.Conns over real connections to
// a test server, never run.
func testConn(t *testing.T) func(*health.Stats) *wsconn.Conn {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := sim.Listen("127.0.0.1:0", "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return func(st *health.Stats) *wsconn.Conn {
		ws, _, err := websocket.Dial(context.Background(), srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.CloseNow() })
		return wsconn.New(ws, nil, st, log, wsconn.Config{QueueSize: 1})
	}
}

// The byte bound with drop_oldest, early on (fewer events than QueueSize
// so far): the oldest are dropped, the cursor stays in the ring. And one
// event larger than QueueBytes is delivered, not a reason to cut a peer off.
func TestQueueBytesBound(t *testing.T) {
	conn := testConn(t)
	for _, policy := range []SlowPolicy{SlowDropOldest, SlowDisconnect} {
		mon := health.NewMonitor(health.NewMetrics(nil, "test"))
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		h := NewHub(Config{QueueSize: 1024, QueueBytes: 1000, Slow: policy, ReplaySize: 1024, ReplayBytes: 1 << 20,
			ReplayMaxAge: time.Minute}, proxy.NewUpstreamState(), proxy.NewRouter(time.Second, proxy.Limits{Calls: 16}, log), mon, log)
		st := mon.Track(health.RoleTarget, "a")
		c := h.attach(conn(st), st, 0, nil)
		h.Event(make([]byte, 5000)) // alone over the bound
		if _, ok := h.cursors[c]; !ok {
			t.Fatalf("%s: one event over QUEUE_BYTES cut the peer off", policy)
		}
		if policy == SlowDisconnect {
			continue
		}
		for range 10 {
			h.Event(make([]byte, 300))
		}
		if c.next > h.ring.next || c.next < h.ring.first {
			t.Fatalf("cursor at %d, outside the ring [%d, %d)", c.next, h.ring.first, h.ring.next)
		}
		if got := h.ring.bytesFrom(c.next); got > 1000 {
			t.Errorf("backlog %d bytes over the 1000 byte bound", got)
		}
		if got := len(c.Pull(make([]wsconn.Item, 0, 64))); got == 0 {
			t.Error("the cursor pulls nothing after dropping")
		}
	}
}

// After the upstream's account changed, a reconnecting target is replayed
// only the new account's events.
func TestReplayStaysWithinTheAccount(t *testing.T) {
	h, stop := newTestHub(t, 0)
	defer stop()
	conn := testConn(t)
	st := h.mon.Track(health.RoleTarget, "a")
	c := h.attach(conn(st), st, 0, nil)
	h.Event([]byte(`{"n":1}`))
	c.Wrote(1)
	resume := h.detach(c, true)
	h.Event([]byte(`{"n":2}`)) // old account, missed
	h.SelfIDChanged(20002)
	h.Event([]byte(`{"n":3}`)) // new account, missed
	c = h.attach(conn(st), st, resume, nil)
	got := c.Pull(make([]wsconn.Item, 0, 8))
	if len(got) != 1 || string(got[0].Frame) != `{"n":3}` {
		t.Fatalf("replayed %d events, want only the new account's event 3", len(got))
	}
	h.detach(c, true)
}

// OBMUX_REPLAY_BYTES bounds a replay, and 0 turns replay off.
func TestReplayBytesBound(t *testing.T) {
	conn := testConn(t)
	for _, c := range []struct {
		replayBytes int64
		want        int
	}{{0, 0}, {2500, 2}, {1 << 20, 5}} {
		mon := health.NewMonitor(health.NewMetrics(nil, "test"))
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		h := NewHub(Config{QueueSize: 1024, QueueBytes: 1 << 20, Slow: SlowDisconnect, ReplaySize: 1024, ReplayBytes: c.replayBytes,
			ReplayMaxAge: time.Minute}, proxy.NewUpstreamState(), proxy.NewRouter(time.Second, proxy.Limits{Calls: 16}, log), mon, log)
		st := mon.Track(health.RoleTarget, "a")
		cur := h.attach(conn(st), st, 0, nil)
		h.Event(make([]byte, 1000))
		cur.Wrote(1)
		resume := h.detach(cur, true)
		for range 5 {
			h.Event(make([]byte, 1000))
		}
		cur = h.attach(conn(st), st, resume, nil)
		if got := len(cur.Pull(make([]wsconn.Item, 0, 8))); got != c.want {
			t.Errorf("REPLAY_BYTES=%d: replayed %d of 5 events of 1000 bytes, want %d", c.replayBytes, got, c.want)
		}
	}
}
