package proxy

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
)

// caller returns a testCaller of its own Monitor.
func caller(name string) *testCaller {
	return newCaller(health.NewMonitor(health.NewMetrics(nil, "test")), name)
}

// frame returns c's next answer.
func (c *testCaller) frame(t *testing.T) []byte {
	t.Helper()
	return []byte(c.next(t))
}

// hold returns the next Hold call's argument.
func (c *testCaller) hold(t *testing.T) bool {
	t.Helper()
	select {
	case on := <-c.holds:
		return on
	case <-time.After(5 * time.Second):
		t.Fatal("the caller was not held")
		return false
	}
}

func (c *testCaller) outcome(o health.Outcome) float64 { return testutil.ToFloat64(c.st.M.API[o]) }

// upstream stands for the upstream connection: it records every frame the
// Router sends.
type upstream struct {
	sent chan []byte
	err  error
}

func (u *upstream) send(b []byte) error {
	if u.err != nil {
		return u.err
	}
	u.sent <- b
	return nil
}

// next returns the next frame sent upstream, scanned.
func (u *upstream) next(t *testing.T) ([]byte, onebot.Frame) {
	t.Helper()
	select {
	case b := <-u.sent:
		return b, scan(t, b)
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent upstream")
		return nil, onebot.Frame{}
	}
}

func newRouter(timeout time.Duration, lim Limits) (*Router, *upstream) {
	r := NewRouter(timeout, lim, testLog())
	u := &upstream{sent: make(chan []byte, 64)}
	r.Attach(u.send)
	return r, u
}

func scan(t *testing.T, b []byte) onebot.Frame {
	t.Helper()
	f, err := onebot.Scan(b)
	if err != nil {
		t.Fatalf("scan %s: %v", b, err)
	}
	return f
}

// requestRaw makes the API request b from c.
func requestRaw(t *testing.T, r *Router, c Caller, b string) {
	t.Helper()
	r.Request(c, []byte(b), scan(t, []byte(b)))
}

// answer sends the upstream's response to the frame req it was sent.
func answer(t *testing.T, r *Router, req onebot.Frame, reqBytes []byte, resp string) bool {
	t.Helper()
	b := []byte(`{"status":"ok","retcode":0,` + resp + `"echo":` + string(onebot.Raw(reqBytes, req.Echo)) + `}`)
	return r.Response(b, scan(t, b))
}

// expectFailure checks that b is obmux's failure with retcode and, if echo
// is not empty, that raw echo.
func expectFailure(t *testing.T, b []byte, retcode int, echo string) {
	t.Helper()
	f := scan(t, b)
	if got, _ := onebot.Int(b, f.Retcode); got != int64(retcode) || !onebot.Is(b, f.Status, "failed") {
		t.Errorf("got %s, want a %d failure", b, retcode)
	}
	if got := string(onebot.Raw(b, f.Echo)); got != echo {
		t.Errorf("echo %s, want %s", got, echo)
	}
}

// Every kind of echo comes back byte for byte, while the upstream only ever
// sees obmux's own, distinct for every call and every caller.
func TestRouterRestoresTheEcho(t *testing.T) {
	r, up := newRouter(time.Minute, Limits{Calls: 100})
	a, b := caller("a"), caller("b")
	echoes := []string{`"x"`, `1`, `1.50`, `{"seq": 7, "k":[1,2]}`, `"obmux:1"`, `null`, `"\u4e2d\""`}
	seen := map[string]bool{}
	for _, e := range echoes {
		for _, c := range []*testCaller{a, b} {
			requestRaw(t, r, c, `{"action":"send_msg","params":{},"echo":`+e+`}`)
			sent, f := up.next(t)
			our := string(onebot.Raw(sent, f.Echo))
			if seen[our] {
				t.Fatalf("echo %s sent upstream twice", our)
			}
			seen[our] = true
			if !answer(t, r, f, sent, `"data":{"message_id":1},`) {
				t.Fatalf("response to %s not routed", our)
			}
			got := c.frame(t)
			if g := string(onebot.Raw(got, scan(t, got).Echo)); g != e {
				t.Errorf("echo %s came back as %s", e, g)
			}
		}
	}
	// No echo: the response carries none either.
	requestRaw(t, r, a, `{"action":"get_status"}`)
	sent, f := up.next(t)
	answer(t, r, f, sent, "")
	if got := a.frame(t); scan(t, got).Echo.Valid() {
		t.Errorf("a call without echo got one back: %s", got)
	}
	if n := a.outcome(health.OutcomeOK); n != float64(len(echoes)+1) {
		t.Errorf("a's ok outcomes %v, want %d", n, len(echoes)+1)
	}
	if r.Pending() != 0 || r.InflightBytes() != 0 {
		t.Errorf("after every response: %d pending, %d bytes in flight", r.Pending(), r.InflightBytes())
	}
}

// A response obmux did not ask for, or one for a caller that left, is not
// routed.
func TestRouterDropsForeignAndForgottenResponses(t *testing.T) {
	r, up := newRouter(time.Minute, Limits{Calls: 100})
	c := caller("a")
	for _, b := range []string{`{"status":"ok","echo":"theirs"}`, `{"status":"ok","echo":"obmux:99"}`, `{"status":"ok"}`} {
		if r.Response([]byte(b), scan(t, []byte(b))) {
			t.Errorf("%s was routed", b)
		}
	}
	requestRaw(t, r, c, `{"action":"x","echo":1}`)
	sent, f := up.next(t)
	if n := r.Forget(c); n != 1 {
		t.Errorf("Forget dropped %d calls, want 1", n)
	}
	if answer(t, r, f, sent, "") {
		t.Error("a forgotten caller's response was routed")
	}
	if r.InflightBytes() != 0 {
		t.Errorf("%d bytes still in flight", r.InflightBytes())
	}
}

// 1502: no upstream, a send that fails, an upstream that goes down with calls
// pending. 1504: no response within the timeout. 1400: Reject, with the echo
// unless it is too long. Each counted under its outcome.
func TestRouterAnswersFailuresItself(t *testing.T) {
	t.Run("upstream not connected", func(t *testing.T) {
		r, _ := newRouter(time.Minute, Limits{Calls: 1})
		r.Attach(nil)
		c := caller("a")
		requestRaw(t, r, c, `{"action":"x","echo":"e1"}`)
		expectFailure(t, c.frame(t), onebot.RetcodeUpstreamDown, `"e1"`)
		requestRaw(t, r, c, `{"action":"x","echo":"e2"}`) // the slot was given back
		expectFailure(t, c.frame(t), onebot.RetcodeUpstreamDown, `"e2"`)
		if n := c.outcome(health.OutcomeUpstreamDown); n != 2 {
			t.Errorf("upstream_down %v, want 2", n)
		}
	})
	t.Run("send fails", func(t *testing.T) {
		r, up := newRouter(time.Minute, Limits{Calls: 1})
		up.err = errors.New("upstream queue full")
		c := caller("a")
		requestRaw(t, r, c, `{"action":"x","echo":{"a":1}}`)
		expectFailure(t, c.frame(t), onebot.RetcodeUpstreamDown, `{"a":1}`)
		if r.Pending() != 0 || r.InflightBytes() != 0 {
			t.Errorf("%d pending, %d bytes in flight", r.Pending(), r.InflightBytes())
		}
	})
	t.Run("upstream down", func(t *testing.T) {
		r, up := newRouter(time.Minute, Limits{Calls: 10})
		c := caller("a")
		for i := range 3 {
			requestRaw(t, r, c, `{"action":"x","echo":`+strconv.Itoa(i)+`}`)
			up.next(t)
		}
		r.UpstreamDown()
		got := map[string]bool{}
		for range 3 {
			b := c.frame(t)
			expectFailure(t, b, onebot.RetcodeUpstreamDown, string(onebot.Raw(b, scan(t, b).Echo)))
			got[string(onebot.Raw(b, scan(t, b).Echo))] = true
		}
		if len(got) != 3 || c.outcome(health.OutcomeUpstreamDown) != 3 || r.Pending() != 0 {
			t.Errorf("echoes %v, upstream_down %v, pending %d", got, c.outcome(health.OutcomeUpstreamDown), r.Pending())
		}
	})
	t.Run("undelivered after send", func(t *testing.T) {
		r, up := newRouter(time.Minute, Limits{Calls: 1})
		c := caller("a")
		requestRaw(t, r, c, `{"action":"x","echo":"n"}`)
		sent, f := up.next(t)
		if !r.Undelivered(sent, "nobody answers") {
			t.Fatal("Undelivered found no call")
		}
		expectFailure(t, c.frame(t), onebot.RetcodeUpstreamDown, `"n"`)
		if r.Undelivered(sent, "again") || answer(t, r, f, sent, "") {
			t.Error("the call was answered twice")
		}
		if c.outcome(health.OutcomeUpstreamDown) != 1 || r.Pending() != 0 || r.InflightBytes() != 0 {
			t.Errorf("upstream_down %v, pending %d, %d bytes", c.outcome(health.OutcomeUpstreamDown), r.Pending(), r.InflightBytes())
		}
	})
	t.Run("timeout", func(t *testing.T) {
		r, up := newRouter(20*time.Millisecond, Limits{Calls: 1})
		c := caller("a")
		requestRaw(t, r, c, `{"action":"slow","echo":"late"}`)
		sent, f := up.next(t)
		expectFailure(t, c.frame(t), onebot.RetcodeUpstreamTimeout, `"late"`)
		if answer(t, r, f, sent, "") {
			t.Error("the response after the timeout was routed")
		}
		if c.outcome(health.OutcomeTimeout) != 1 || c.outcome(health.OutcomeOK) != 0 {
			t.Errorf("timeout %v ok %v", c.outcome(health.OutcomeTimeout), c.outcome(health.OutcomeOK))
		}
	})
	t.Run("bad request", func(t *testing.T) {
		r, _ := newRouter(time.Minute, Limits{Calls: 1})
		c := caller("a")
		b := []byte(`{"post_type":"message","echo":[1]}`)
		r.Reject(c, b, scan(t, b), "not an API request")
		expectFailure(t, c.frame(t), onebot.RetcodeBadRequest, `[1]`)
		long := []byte(`{"echo":"` + strings.Repeat("e", MaxRejectEcho) + `"}`)
		r.Reject(c, long, scan(t, long), "not an API request")
		expectFailure(t, c.frame(t), onebot.RetcodeBadRequest, "")
		if c.outcome(health.OutcomeFailed) != 2 {
			t.Errorf("failed %v, want 2", c.outcome(health.OutcomeFailed))
		}
	})
}

// NapCat's streaming actions answer with parts ("stream":"stream-action",
// data.type "stream") before the final response: every part reaches the
// caller with its echo, renews the timeout, and only the final response ends
// the call and counts an outcome.
func TestRouterStreamsParts(t *testing.T) {
	const timeout = 400 * time.Millisecond
	r, up := newRouter(timeout, Limits{Calls: 1})
	c := caller("a")
	requestRaw(t, r, c, `{"action":"upload_file_stream","echo":"up"}`)
	sent, f := up.next(t)
	part := `"stream":"stream-action","data":{"type":"stream","data_type":"file_chunk","index":1},`
	for range 3 { // 1.5 timeouts in all: the parts renew it
		time.Sleep(timeout / 2) // the timing under test, not a wait for an event
		if !answer(t, r, f, sent, part) {
			t.Fatal("a part was not routed")
		}
		got := c.frame(t)
		if e := string(onebot.Raw(got, scan(t, got).Echo)); e != `"up"` {
			t.Errorf("part echo %s", e)
		}
	}
	if r.Pending() != 1 || c.outcome(health.OutcomeOK) != 0 {
		t.Errorf("after the parts: %d pending, ok %v", r.Pending(), c.outcome(health.OutcomeOK))
	}
	if !answer(t, r, f, sent, `"stream":"stream-action","data":{"type":"response","file_path":"/x"},`) {
		t.Fatal("the final response was not routed")
	}
	c.frame(t)
	if r.Pending() != 0 || c.outcome(health.OutcomeOK) != 1 || c.outcome(health.OutcomeTimeout) != 0 {
		t.Errorf("after the end: %d pending, ok %v, timeout %v", r.Pending(), c.outcome(health.OutcomeOK), c.outcome(health.OutcomeTimeout))
	}
}

// A caller at its in-flight limit waits (held) until one of its calls ends,
// while another caller's calls go through; a caller that leaves while
// waiting gives up.
func TestRouterInflightLimit(t *testing.T) {
	r, up := newRouter(time.Minute, Limits{Calls: 2})
	a, b := caller("a"), caller("b")
	requestRaw(t, r, a, `{"action":"x","echo":1}`)
	sent1, f1 := up.next(t)
	requestRaw(t, r, a, `{"action":"x","echo":2}`)
	up.next(t)
	var wg sync.WaitGroup
	wg.Go(func() { requestRaw(t, r, a, `{"action":"x","echo":3}`) })
	if on := a.hold(t); !on {
		t.Fatal("Hold(false) before Hold(true)")
	}
	select {
	case b := <-up.sent:
		t.Fatalf("a third call of a went upstream over the limit: %s", b)
	default:
	}
	requestRaw(t, r, b, `{"action":"y","echo":"b"}`) // b has its own slots
	if sent, _ := up.next(t); !bytes.Contains(sent, []byte(`"action":"y"`)) {
		t.Fatalf("sent %s, want b's call", sent)
	}
	answer(t, r, f1, sent1, "")
	a.frame(t)
	if sent, _ := up.next(t); !bytes.Contains(sent, []byte(`"action":"x"`)) {
		t.Fatalf("sent %s, want a's third call", sent)
	}
	wg.Wait()
	if on := a.hold(t); on {
		t.Error("Hold(true) twice")
	}

	// Full again (calls 2 and 3 pending): a fourth waits, and gives up
	// when a goes away.
	done := make(chan struct{})
	go func() { requestRaw(t, r, a, `{"action":"x","echo":4}`); close(done) }()
	a.hold(t)
	close(a.gone)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting call did not give up when its caller left")
	}
	a.hold(t)
	r.Forget(a)
	r.Forget(b)
	if r.Pending() != 0 || r.InflightBytes() != 0 {
		t.Errorf("%d pending, %d bytes in flight", r.Pending(), r.InflightBytes())
	}
}

// The byte bound holds a caller's next call while its calls in flight would
// exceed it; one call larger than the bound is taken alone.
func TestRouterInflightBytes(t *testing.T) {
	big := `{"action":"x","params":{"b":"` + strings.Repeat("b", 1000) + `"},"echo":`
	r, up := newRouter(time.Minute, Limits{Calls: 100, Bytes: 1500})
	c := caller("a")
	requestRaw(t, r, c, big+`1}`) // about 1200 bytes with its overhead: two exceed the bound
	sent, f := up.next(t)
	done := make(chan struct{})
	go func() { requestRaw(t, r, c, big+`2}`); close(done) }()
	c.hold(t)
	answer(t, r, f, sent, "")
	c.frame(t)
	<-done
	up.next(t)
	c.hold(t)
	r.Forget(c)
}

// A call that times out while its frame still waits in the upstream's queue
// (behind a slow upstream) is answered 1504 at once, but its bytes and its
// slot count until the frame has left the queue: what waits there is within
// the limits too, so the queue, bounded as much, never refuses a call and
// obmux never holds more than the limits for an upstream that reads slowly.
func TestRouterCountsACallUntilItsFrameLeftTheQueue(t *testing.T) {
	r := NewRouter(20*time.Millisecond, Limits{Calls: 1, TotalBytes: 1 << 20}, testLog())
	type queuedFrame struct {
		b    []byte
		left func()
	}
	queue := make(chan queuedFrame, 8)
	r.setSend(func(b []byte, left func()) error { queue <- queuedFrame{b, left}; return nil })
	next := func() queuedFrame {
		t.Helper()
		select {
		case q := <-queue:
			return q
		case <-time.After(5 * time.Second):
			t.Fatal("nothing queued for the upstream")
			return queuedFrame{}
		}
	}
	a := caller("a")
	requestRaw(t, r, a, `{"action":"x","echo":1}`)
	first := next()
	expectFailure(t, a.frame(t), onebot.RetcodeUpstreamTimeout, `1`)
	if r.InflightBytes() == 0 {
		t.Error("a timed-out call whose frame is still queued counts no bytes")
	}
	done := make(chan struct{})
	go func() { requestRaw(t, r, a, `{"action":"x","echo":2}`); close(done) }()
	a.hold(t) // its slot is still taken
	select {
	case q := <-queue:
		t.Fatalf("a second call went upstream while the first still waited there: %s", q.b)
	default:
	}
	first.left() // written at last
	<-done
	second := next()
	if a.hold(t) {
		t.Error("Hold(true) twice")
	}
	expectFailure(t, a.frame(t), onebot.RetcodeUpstreamTimeout, `2`)
	second.left()
	if n := r.InflightBytes(); n != 0 {
		t.Errorf("%d bytes in flight after every frame left", n)
	}
}
