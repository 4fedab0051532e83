package health

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// receiver is a real HTTP server that records the notifications POSTed to
// it and answers with the statuses queued in fail first.
type receiver struct {
	*httptest.Server
	mu    sync.Mutex
	got   []Notification
	raw   []string
	fail  []int
	calls int
	ch    chan Notification
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{ch: make(chan Notification, 64)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.calls++
		if len(r.fail) > 0 {
			code := r.fail[0]
			r.fail = r.fail[1:]
			r.mu.Unlock()
			w.WriteHeader(code)
			return
		}
		r.mu.Unlock()
		if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s with Content-Type %q", req.Method, req.Header.Get("Content-Type"))
		}
		var n Notification
		if err := json.Unmarshal(b, &n); err != nil {
			t.Errorf("not JSON: %s", b)
		}
		r.mu.Lock()
		r.got, r.raw = append(r.got, n), append(r.raw, string(b))
		r.mu.Unlock()
		r.ch <- n
	}))
	t.Cleanup(r.Close)
	return r
}

// next waits for the next notification.
func (r *receiver) next(t *testing.T) Notification {
	t.Helper()
	select {
	case n := <-r.ch:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
		return Notification{}
	}
}

// none checks that nothing arrives for d.
func (r *receiver) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case n := <-r.ch:
		t.Fatalf("unexpected notification %+v", n)
	case <-time.After(d):
	}
}

type notifyFixture struct {
	mon  *Monitor
	acct *Account
	n    *Notifier
	reg  *prometheus.Registry
	stop func()
}

func startNotifier(t *testing.T, cfg NotifyConfig) *notifyFixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	f := &notifyFixture{mon: NewMonitor(NewMetrics(nil, "test")), acct: NewAccount(reg), reg: reg}
	if cfg.Tick == 0 {
		cfg.Tick = 5 * time.Millisecond
	}
	if cfg.Redact == nil {
		cfg.Redact = func(s string) string { return regexp.MustCompile(`\?\S*`).ReplaceAllString(s, "?…") }
	}
	f.n = NewNotifier(cfg, f.mon, f.acct, reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.n.Run(ctx); close(done) }()
	var once sync.Once
	f.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(f.stop)
	return f
}

func (f *notifyFixture) count(result string) float64 {
	return map[string]float64{"sent": testutil.ToFloat64(f.n.sentC), "failed": testutil.ToFloat64(f.n.failedC),
		"dropped": testutil.ToFloat64(f.n.droppedC), "suppressed": testutil.ToFloat64(f.n.suppressedC)}[result]
}

// testClock is a NotifyConfig.Now that stands still until the test moves
// it, so that how long something has been down, and how many tokens the
// rate limit has, depend on the test alone, not on how busy the machine is.
// The watcher reads it once at the start of every look at the subjects.
type testClock struct {
	mu      sync.Mutex
	now     time.Time
	reads   int
	waiters map[chan struct{}]int // closed once reads reaches the value
}

func newTestClock() *testClock {
	return &testClock{now: time.Now(), waiters: map[chan struct{}]int{}}
}

// Now is the clock's reading.
func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	for ch, n := range c.waiters {
		if c.reads >= n {
			close(ch)
			delete(c.waiters, ch)
		}
	}
	return c.now
}

// set moves the clock to t; it never goes back.
func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
}

// add moves the clock d forward.
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// looked waits until the watcher has looked at everything as it is now: it
// has started a look after this call (the read of the clock comes before it
// reads any state) and finished it (the next read comes after).
func (c *testClock) looked(t *testing.T) {
	t.Helper()
	ch := make(chan struct{})
	c.mu.Lock()
	c.waiters[ch] = c.reads + 2
	c.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher did not look")
	}
}

// quiet is how long a check that nothing is sent waits (after the watcher
// has looked) for a POST already under way.
const quiet = 100 * time.Millisecond

func TestNotifyAccountAndTargets(t *testing.T) {
	r := newReceiver(t)
	const after = 150 * time.Millisecond
	c := newTestClock()
	f := startNotifier(t, NotifyConfig{URL: r.URL + "/hook", After: after, UserAgent: "obmux/test", Now: c.Now})
	up := f.mon.Track(RoleUpstream, "upstream")
	tg := f.mon.Track(RoleTarget, "nonebot")
	f.mon.Track(RoleTarget, "koishi") // never dialed: waits for the upstream
	f.acct.SetSelfID(10001)
	up.Up()
	f.acct.Connected(true)
	tg.Up()
	// The clock reads After past everything so far (real time only moves
	// on from here, so whatever goes down later is down for less than
	// After until the clock is moved again).
	c.set(time.Now().Add(after))
	c.looked(t)
	r.none(t, quiet) // everything fine, and koishi is not down, only waiting

	f.acct.Event(false, "bot_offline: KickedOffLine: 已在另一台设备登录")
	n := r.next(t)
	if n.Event != "account_offline" || n.SelfID != 10001 || n.Name != "account" || !strings.Contains(n.Reason, "KickedOffLine") ||
		n.Time.IsZero() || n.Title == "" || !strings.Contains(n.Message, "已在另一台设备登录") || n.Priority == 0 {
		t.Errorf("account offline: %+v", n)
	}
	f.acct.Heartbeat(false, false)
	f.acct.Heartbeat(true, true)
	if n := r.next(t); n.Event != "account_online" {
		t.Errorf("account back: %+v", n)
	}

	// Down for less than After: nothing; for longer: target_down, once.
	tg.Down(ReasonClosedByPeer, errors.New("peer closed the connection: status = StatusGoingAway"))
	c.looked(t) // it has seen the target down, for less than After
	tg.Up()
	c.looked(t)
	r.none(t, quiet)
	tg.Down(ReasonKeepaliveTimeout, errors.New("dial ws://nonebot:8080/onebot/v11/ws?access_token=secret: refused"))
	c.looked(t)
	r.none(t, quiet) // not yet After
	c.set(time.Now().Add(after))
	n = r.next(t)
	if n.Event != "target_down" || n.Name != "nonebot" || !strings.HasPrefix(n.Reason, "keepalive_timeout: dial") ||
		strings.Contains(n.Reason, "secret") || strings.Contains(n.Message, "secret") {
		t.Errorf("target down: %+v", n)
	}
	c.add(after)
	c.looked(t)
	r.none(t, quiet) // once
	tg.Up()
	if n := r.next(t); n.Event != "target_up" || n.Name != "nonebot" {
		t.Errorf("target up: %+v", n)
	}

	// The upstream lost: upstream_down (the account's state is unknown
	// meanwhile: no account notification), then upstream_up.
	up.Down(ReasonClosedByPeer, nil)
	f.acct.Connected(false)
	c.set(time.Now().Add(after))
	if n := r.next(t); n.Event != "upstream_down" || n.Name != "upstream" || n.Reason != "closed_by_peer" {
		t.Errorf("upstream down: %+v", n)
	}
	up.Up()
	f.acct.Connected(true)
	if n := r.next(t); n.Event != "upstream_up" {
		t.Errorf("upstream up: %+v", n)
	}
	c.add(after)
	c.looked(t)
	r.none(t, quiet)
	if got := f.count("sent"); got != 6 {
		t.Errorf("sent = %v, want 6", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, raw := range r.raw {
		for _, key := range []string{`"event":`, `"self_id":10001`, `"name":`, `"reason":`, `"time":"`} {
			if !strings.Contains(raw, key) {
				t.Errorf("%s has no %s", raw, key)
			}
		}
	}
}

// A listening upstream that never connects is notified once NOTIFY_AFTER
// has passed since the start.
func TestNotifyUpstreamNeverConnected(t *testing.T) {
	r := newReceiver(t)
	f := startNotifier(t, NotifyConfig{URL: r.URL, After: 50 * time.Millisecond})
	f.mon.Track(RoleUpstream, "upstream")
	if n := r.next(t); n.Event != "upstream_down" || n.Reason != "never connected" {
		t.Errorf("%+v", n)
	}
}

// A failing receiver is retried with backoff; a 4xx other than 408/429 is
// not; the error logged never shows the URL's query.
func TestNotifyRetries(t *testing.T) {
	r := newReceiver(t)
	r.fail = []int{503, 502, 429}
	f := startNotifier(t, NotifyConfig{URL: r.URL + "/message?token=s3cret", RetryMin: 10 * time.Millisecond, Retries: 3})
	f.acct.Connected(true)
	f.acct.Event(false, "lifecycle disable")
	if n := r.next(t); n.Event != "account_offline" {
		t.Errorf("%+v", n)
	}
	r.mu.Lock()
	calls := r.calls
	r.fail = []int{400}
	r.mu.Unlock()
	if calls != 4 {
		t.Errorf("%d calls, want 3 failures and a success", calls)
	}
	f.acct.Event(true, "lifecycle enable")
	deadline := time.Now().Add(5 * time.Second)
	for f.count("failed") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the 400 was not counted as failed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	r.mu.Lock()
	if r.calls != 5 {
		t.Errorf("%d calls: a 400 was retried", r.calls)
	}
	r.mu.Unlock()

	// A receiver that is down: every retry fails, counted once.
	r.Close()
	f.acct.Event(false, "lifecycle disable")
	deadline = time.Now().Add(5 * time.Second)
	for f.count("failed") != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the unreachable receiver was not counted as failed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A flapping subject sends at most Burst notifications, then only its
// latest state when a token comes back; changes in between are coalesced.
func TestNotifyRateLimit(t *testing.T) {
	r := newReceiver(t)
	const refill = 400 * time.Millisecond
	c := newTestClock()
	f := startNotifier(t, NotifyConfig{URL: r.URL, Burst: 2, Refill: refill, Now: c.Now})
	f.acct.Connected(true)
	flap := func(online bool) {
		f.acct.Event(online, map[bool]string{true: "lifecycle enable", false: "lifecycle disable"}[online])
		c.looked(t) // each state is seen
	}
	flap(false)
	flap(true)
	for range 5 {
		flap(false)
		flap(true)
	}
	flap(false) // ends offline
	if n := r.next(t); n.Event != "account_offline" {
		t.Errorf("first: %+v", n)
	}
	if n := r.next(t); n.Event != "account_online" {
		t.Errorf("second: %+v", n)
	}
	r.none(t, quiet)
	// Every change to offline without a token was held back, once each.
	if got := f.count("suppressed"); got != 6 {
		t.Errorf("suppressed = %v, want 6", got)
	}
	// Not quite a token back yet.
	c.add(refill - 10*time.Millisecond)
	c.looked(t)
	r.none(t, quiet)
	// The rest coalesced into the latest state, sent when a token is back.
	c.add(20 * time.Millisecond)
	if n := r.next(t); n.Event != "account_offline" {
		t.Errorf("after the refill: %+v", n)
	}
	c.add(refill * 3 / 2)
	c.looked(t)
	r.none(t, quiet)
	if got := f.count("sent"); got != 3 {
		t.Errorf("sent = %v, want 3", got)
	}
}

// The queue is bounded: while the receiver hangs, more notifications than
// it holds are dropped and counted, and the watcher never blocks.
func TestNotifyQueueOverflow(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	c := newTestClock()
	f := startNotifier(t, NotifyConfig{URL: srv.URL, QueueSize: 2, Burst: 100, Timeout: 5 * time.Second, Now: c.Now})
	f.acct.Connected(true)
	for i := range 10 {
		f.acct.Event(i%2 == 1, "flap")
		c.looked(t) // each state is seen: 10 notifications
	}
	// One POST hangs, two wait in the queue: the other seven are dropped
	// (at once: the watcher does not wait for the queue).
	if got := f.count("dropped"); got < 7 {
		t.Fatalf("%v dropped of 10 with a queue of 2 and a hung receiver, want at least 7", got)
	}
	f.stop() // returns although a POST hangs: ctx ends it
}
