package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
)

// testCaller is a Caller whose answers land in a channel, and its Hold
// calls in another.
type testCaller struct {
	st    *health.Stats
	got   chan []byte
	holds chan bool
	gone  chan struct{}
}

func newCaller(mon *health.Monitor, name string) *testCaller {
	return &testCaller{st: mon.Track(health.RoleTarget, name), got: make(chan []byte, 1024), holds: make(chan bool, 64),
		gone: make(chan struct{})}
}

func (c *testCaller) Deliver(b []byte)      { c.got <- b }
func (c *testCaller) Stats() *health.Stats  { return c.st }
func (c *testCaller) Gone() <-chan struct{} { return c.gone }
func (c *testCaller) Hold(on bool)          { c.holds <- on }

func (c *testCaller) MessageFormat() onebot.MessageFormat { return onebot.FormatAsIs }

// next returns c's next answer, failing after a generous deadline.
func (c *testCaller) next(t *testing.T) string {
	t.Helper()
	select {
	case b := <-c.got:
		return string(b)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s got no answer", c.st.Name)
		return ""
	}
}

// none checks that c has no answer waiting.
func (c *testCaller) none(t *testing.T) {
	t.Helper()
	select {
	case b := <-c.got:
		t.Fatalf("%s: unexpected answer %s", c.st.Name, b)
	default:
	}
}

// wire is the upstream side of a Router under test: the frames it was
// sent, in order.
type wire struct {
	mu     sync.Mutex
	frames []string
	sent   chan struct{}
}

func newWire(r *Router) *wire {
	w := &wire{sent: make(chan struct{}, 1024)}
	r.Attach(func(b []byte) error {
		w.mu.Lock()
		w.frames = append(w.frames, string(b))
		w.mu.Unlock()
		w.sent <- struct{}{}
		return nil
	})
	return w
}

func (w *wire) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.frames)
}

// await waits until n frames were sent and returns them all.
func (w *wire) await(t *testing.T, n int) []string {
	t.Helper()
	for w.count() < n {
		select {
		case <-w.sent:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d frames sent upstream, want %d", w.count(), n)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.frames...)
}

// newSendRig returns a router with limits (and a minute's timeout) whose
// upstream is a wire, and two callers of it, a and b.
func newSendRig(limits Limits) (*Router, *wire, *testCaller, *testCaller) {
	mon := health.NewMonitor(health.NewMetrics(nil, "test"))
	r := NewRouter(time.Minute, limits, testLog())
	return r, newWire(r), newCaller(mon, "a"), newCaller(mon, "b")
}

func request(t testing.TB, r *Router, c Caller, action, echo string) {
	t.Helper()
	b := []byte(`{"action":"` + action + `","params":{"message":"x"},"echo":"` + echo + `"}`)
	f, err := onebot.Scan(b)
	if err != nil {
		t.Fatal(err)
	}
	r.Request(c, b, f)
}

// callID returns the call id of the echo r gave frame f.
func callID(t *testing.T, r *Router, f string) uint64 {
	t.Helper()
	fr, err := onebot.Scan([]byte(f))
	if err != nil {
		t.Fatal(err)
	}
	id, _, ok := r.parseEcho(onebot.Raw([]byte(f), fr.Echo))
	if !ok {
		t.Fatalf("not obmux's echo: %s", f)
	}
	return id
}

func testLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var sendActions = []string{"send_msg", "send_group_msg"}

// The queue's order, without timing: each caller's sends in order, the
// callers in turn (one send each, the one just served to the back), a
// removed call gone from its place, a caller with nothing left out of the
// turn.
func TestSendQueueOrder(t *testing.T) {
	for _, c := range []struct {
		name   string
		push   string // one caller letter per send, in push order
		remove []int  // indices into push of calls removed before popping
		want   string // the pop order: caller letter and its send's number
	}{
		{"one caller", "aaa", nil, "a1 a2 a3"},
		{"round robin", "aaaab", nil, "a1 b1 a2 a3 a4"},
		{"three callers", "aaabbc", nil, "a1 b1 c1 a2 b2 a3"},
		{"late caller", "abaaaac", nil, "a1 b1 c1 a2 a3 a4 a5"},
		{"removed", "aaabb", []int{1, 3}, "a1 b2 a3"},
		{"caller emptied", "abab", []int{1, 3}, "a1 a2"},
		{"all removed", "ab", []int{0, 1}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			mon := health.NewMonitor(health.NewMetrics(nil, "test"))
			r := NewRouter(time.Minute, Limits{Calls: 10, Send: SendLimit{Rate: 1, Burst: 1, Actions: sendActions}}, testLog())
			q := r.sends
			q.running = true // no dispatcher: the test pops
			callers := map[byte]*testCaller{}
			n := map[byte]int{}
			var calls []*call
			label := map[*call]string{}
			r.mu.Lock()
			for i := range len(c.push) {
				k := c.push[i]
				if callers[k] == nil {
					callers[k] = newCaller(mon, string(k))
				}
				n[k]++
				cl := &call{caller: callers[k], start: time.Now()}
				label[cl] = fmt.Sprintf("%c%d", k, n[k])
				calls = append(calls, cl)
				q.push(r, cl, nil)
			}
			for _, i := range c.remove {
				q.remove(calls[i])
			}
			var got []string
			for cl := q.pop(); cl != nil; cl = q.pop() {
				got = append(got, label[cl])
			}
			r.mu.Unlock()
			if strings.Join(got, " ") != c.want {
				t.Errorf("popped %q, want %q", strings.Join(got, " "), c.want)
			}
			for k, tc := range callers {
				if v := testutil.ToFloat64(tc.st.M.SendQueue); v != 0 {
					t.Errorf("%c: obmux_send_queue_length %v after the queue emptied", k, v)
				}
			}
			if len(q.order) != 0 || len(q.waiting) != 0 {
				t.Errorf("queue not empty: %d callers in turn, %d waiting", len(q.order), len(q.waiting))
			}
		})
	}
}

// Over the burst, a send waits; other calls never do; a send still waiting
// at its timeout is answered 1504 saying so, and never sent.
func TestSendRateTimeout(t *testing.T) {
	mon := health.NewMonitor(health.NewMetrics(nil, "test"))
	r := NewRouter(300*time.Millisecond, Limits{Calls: 10, Send: SendLimit{Rate: 1.0 / 3600, Burst: 2, Actions: sendActions, Spec: "1/h"}}, testLog())
	w := newWire(r)
	a := newCaller(mon, "a")
	request(t, r, a, "send_msg", "s1")
	request(t, r, a, "send_group_msg_async", "s2")
	request(t, r, a, "send_msg_rate_limited", "s3") // over the burst of 2: waits
	request(t, r, a, "get_group_list", "g")         // never waits behind it
	request(t, r, a, "send_private_msg", "p")       // not in the list: not limited
	frames := w.await(t, 4)
	for i, want := range []string{`"send_msg"`, `"send_group_msg_async"`, `"get_group_list"`, `"send_private_msg"`} {
		if !strings.Contains(frames[i], want) {
			t.Errorf("frame %d sent upstream: %s, want %s", i, frames[i], want)
		}
	}
	if v := testutil.ToFloat64(a.st.M.SendQueue); v != 1 {
		t.Errorf("obmux_send_queue_length %v, want 1", v)
	}
	// All time out at once: the four sent ones as upstream timeouts
	// (nobody answers), the queued one saying it waited for the limit.
	answers := map[string]string{}
	for range 5 {
		got := a.next(t)
		echo := got[strings.LastIndex(got, `"echo":`):]
		if answers[echo] != "" {
			t.Errorf("answered twice: %s", got)
		}
		answers[echo] = got
	}
	want := `{"status":"failed","retcode":1504,"data":null,"message":"obmux: waited OBMUX_API_TIMEOUT=300ms for the send rate limit (OBMUX_SEND_RATE=1/h); the message was not sent",` +
		`"wording":"obmux: waited OBMUX_API_TIMEOUT=300ms for the send rate limit (OBMUX_SEND_RATE=1/h); the message was not sent","echo":"s3"}`
	if got := answers[`"echo":"s3"}`]; got != want {
		t.Errorf("timed-out send:\n got %s\nwant %s", got, want)
	}
	for _, e := range []string{"s1", "s2", "g", "p"} {
		if got := answers[`"echo":"`+e+`"}`]; !strings.Contains(got, `"message":"upstream timeout"`) {
			t.Errorf("sent call %s: %q", e, got)
		}
	}
	a.none(t)
	if n := w.count(); n != 4 {
		t.Errorf("%d frames sent upstream, want 4 (the timed-out send never)", n)
	}
	if v := testutil.ToFloat64(a.st.M.SendQueue); v != 0 {
		t.Errorf("obmux_send_queue_length %v after the timeout", v)
	}
	if v := testutil.ToFloat64(a.st.M.API[health.OutcomeTimeout]); v != 5 {
		t.Errorf("timeouts counted %v, want 5", v)
	}
	if r.InflightBytes() != 0 {
		t.Errorf("%d bytes still in flight", r.InflightBytes())
	}
}

// The sends queued for a caller that went away are never sent; the others'
// still go, at the rate.
func TestSendQueueCallerGone(t *testing.T) {
	r, w, a, b := newSendRig(Limits{Calls: 10, Send: SendLimit{Rate: 50, Burst: 1, Actions: sendActions, Spec: "50/s"}})
	for i := range 5 {
		request(t, r, a, "send_msg", fmt.Sprint("a", i))
		request(t, r, b, "send_msg", fmt.Sprint("b", i))
	}
	before := w.count()
	r.Forget(a)
	if v := testutil.ToFloat64(a.st.M.SendQueue); v != 0 {
		t.Errorf("a's queue length %v after it went away", v)
	}
	// a's calls have the odd echoes, b's the even ones. Once b's five are
	// out, any of a's still queued would have gone out between them.
	echo := func(f string) int { return int(callID(t, r, f)) }
	var frames []string
	for k, fromB := 1, 0; fromB < 5; k++ {
		frames = w.await(t, k)[:k]
		if echo(frames[k-1])%2 == 0 {
			fromB++
		}
	}
	fromA, aBefore := 0, 0
	for i, f := range frames {
		if echo(f)%2 == 1 {
			fromA++
			if i < before {
				aBefore++
			}
		}
	}
	// One of a's may have been on its way when it went.
	if fromA > aBefore+1 {
		t.Errorf("%d of a's sends went out after it went away (%d before)", fromA-aBefore, aBefore)
	}
	r.UpstreamDown()
	for range 5 {
		if got := b.next(t); !strings.Contains(got, `"retcode":1502`) {
			t.Errorf("b: %s", got)
		}
	}
}

// Queued sends are answered 1502 at once, exactly once, when the upstream
// drops.
func TestSendQueueCallerGoneAndUpstreamDown(t *testing.T) {
	r, w, a, b := newSendRig(Limits{Calls: 10, Send: SendLimit{Rate: 1.0 / 3600, Burst: 1, Actions: sendActions, Spec: "1/h"}})
	for i := range 5 {
		request(t, r, a, "send_msg", fmt.Sprint("a", i))
		request(t, r, b, "send_msg", fmt.Sprint("b", i))
	}
	w.await(t, 1) // a0: the burst
	if n := r.Forget(a); n != 5 {
		t.Errorf("Forget dropped %d calls, want 5", n)
	}
	if v := testutil.ToFloat64(a.st.M.SendQueue); v != 0 {
		t.Errorf("a's queue length %v after it went away", v)
	}
	r.UpstreamDown()
	seen := map[string]int{}
	for range 5 {
		got := b.next(t)
		if !strings.Contains(got, `"retcode":1502`) || !strings.Contains(got, `"message":"upstream disconnected"`) {
			t.Errorf("b: %s", got)
		}
		seen[got[strings.Index(got, `"echo":`):]]++
	}
	if len(seen) != 5 {
		t.Errorf("answers per echo: %v", seen)
	}
	a.none(t)
	b.none(t)
	if n := w.count(); n != 1 {
		t.Errorf("%d frames sent upstream, want 1", n)
	}
	if r.InflightBytes() != 0 || r.Pending() != 0 {
		t.Errorf("%d bytes, %d calls left", r.InflightBytes(), r.Pending())
	}
}

// With real timing: a caller's flood goes out at the rate, in order, and
// another caller's single send arriving meanwhile goes within one turn.
func TestSendQueueFair(t *testing.T) {
	r, w, a, b := newSendRig(Limits{Calls: 100, Send: SendLimit{Rate: 100, Burst: 1, Actions: sendActions, Spec: "100/s"}})
	for i := range 30 {
		request(t, r, a, "send_msg", fmt.Sprint("a", i))
	}
	before := w.count()
	request(t, r, b, "send_msg", "b")
	frames := w.await(t, 31)
	pos := -1
	next := 0
	for i, f := range frames {
		if callID(t, r, f) == 31 { // b's
			pos = i
			continue
		}
		if id := callID(t, r, f); id != uint64(next+1) {
			t.Errorf("frame %d: call %d, want a's %d (a's sends in order)", i, id, next+1)
		}
		next++
	}
	// At most one of a's was on its way when b pushed, and a, just served,
	// may be ahead of b once more.
	if pos < 0 || pos > before+2 {
		t.Errorf("b's send went out %dth, with %d of a's out before it was queued: want at most %d", pos+1, before, before+3)
	}
	if before >= 29 {
		t.Logf("the flood was mostly out before b's send (loaded machine?): %d", before)
	}
}

// The per-send cost of the queue: ten callers push, the dispatcher pops.
func BenchmarkSendQueue(b *testing.B) {
	mon := health.NewMonitor(health.NewMetrics(nil, "test"))
	r := NewRouter(time.Minute, Limits{Calls: 10, Send: SendLimit{Rate: 1, Burst: 1, Actions: sendActions}}, testLog())
	q := r.sends
	q.running = true
	var callers []*testCaller
	for i := range 10 {
		callers = append(callers, newCaller(mon, fmt.Sprint(i)))
	}
	calls := make([]*call, 100)
	for i := range calls {
		calls[i] = &call{caller: callers[i%10], start: time.Now()}
	}
	b.ReportAllocs()
	for b.Loop() {
		r.mu.Lock()
		for _, cl := range calls {
			q.push(r, cl, nil)
		}
		for q.pop() != nil {
		}
		r.mu.Unlock()
	}
}
