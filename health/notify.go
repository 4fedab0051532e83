package health

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NotifyConfig configures a Notifier. Zero values take the defaults.
type NotifyConfig struct {
	// URL receives every notification as a JSON POST.
	URL string
	// After is how long the upstream or a target must stay down before it
	// is notified (OBMUX_NOTIFY_AFTER); the account is notified at once.
	After     time.Duration
	UserAgent string
	// Redact removes URL queries from error texts (required: the POST's
	// own errors name OBMUX_NOTIFY_URL, whose query may hold a token).
	Redact func(string) string
	Log    *slog.Logger
	// Tick is how often the connections are looked at (1s).
	Tick time.Duration
	// Retries is how often a failed POST is tried again (5), waiting from
	// RetryMin to RetryMax (1s, 1m), doubling.
	Retries            int
	RetryMin, RetryMax time.Duration
	// Burst notifications about one subject (the account, the upstream, a
	// target) go out at once, then one every Refill (4, 10m); changes in
	// between are coalesced: only the latest state is sent.
	Burst  int
	Refill time.Duration
	// QueueSize bounds the notifications waiting to be sent (64); more are
	// dropped and counted.
	QueueSize int
	// Timeout bounds one POST (10s).
	Timeout time.Duration
	// Now is the clock that down times and the rate limit are measured on
	// (nil: time.Now); tests set it to decide exactly how much time passed.
	Now func() time.Time
}

// Notification is the JSON document POSTed to OBMUX_NOTIFY_URL. Title,
// Message and Priority make it a Gotify message and give ntfy's templates
// something to show.
type Notification struct {
	// Event is account_offline, account_online, upstream_down,
	// upstream_up, target_down or target_up.
	Event  string `json:"event"`
	SelfID int64  `json:"self_id"`
	// Name is the target's name, "upstream", or "account".
	Name     string    `json:"name"`
	Reason   string    `json:"reason"`
	Time     time.Time `json:"time"`
	Title    string    `json:"title"`
	Message  string    `json:"message"`
	Priority int       `json:"priority"`
}

// Notifier sends notifications about the account, the upstream and the
// targets. It watches them from its own goroutine (it never blocks the data
// path) and sends from another, through a bounded queue.
type Notifier struct {
	cfg    NotifyConfig
	mon    *Monitor
	acct   *Account
	client *http.Client
	queue  chan Notification
	start  time.Time
	failed FailureLog

	subjects map[string]*subject // the watcher's own

	sentC, failedC, droppedC, suppressedC prometheus.Counter
}

// subject is what the watcher knows of one thing it notifies about.
type subject struct {
	bad     bool // the last state notified: offline or down
	tokens  float64
	refill  time.Time
	holding bool // a change waits for a token
}

// NewNotifier returns a Notifier for mon's connections and acct; its
// obmux_notifications_total is registered on reg (nil: not registered).
func NewNotifier(cfg NotifyConfig, mon *Monitor, acct *Account, reg prometheus.Registerer) *Notifier {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Tick, time.Second)
	def(&cfg.RetryMin, time.Second)
	def(&cfg.RetryMax, time.Minute)
	def(&cfg.Refill, 10*time.Minute)
	def(&cfg.Timeout, 10*time.Second)
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 4
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 64
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Redact == nil {
		cfg.Redact = func(string) string { return "(hidden)" }
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	n := &Notifier{cfg: cfg, mon: mon, acct: acct, queue: make(chan Notification, cfg.QueueSize),
		client: &http.Client{Timeout: cfg.Timeout, Transport: transport}, subjects: map[string]*subject{},
		start: cfg.Now()}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_notifications_total",
		Help: "Notifications to OBMUX_NOTIFY_URL: sent, failed (after every retry), dropped (queue full), suppressed (rate limit)."},
		[]string{"result"})
	n.sentC, n.failedC = vec.WithLabelValues("sent"), vec.WithLabelValues("failed")
	n.droppedC, n.suppressedC = vec.WithLabelValues("dropped"), vec.WithLabelValues("suppressed")
	if reg != nil {
		reg.MustRegister(vec)
	}
	return n
}

// Run watches and sends until ctx is done.
func (n *Notifier) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-n.queue:
				n.send(ctx, ev)
			}
		}
	}()
	tick := time.NewTicker(n.cfg.Tick)
	defer tick.Stop()
	watch := n.acct.Watch()
	for {
		select {
		case <-ctx.Done():
			<-done
			return
		case <-tick.C:
		case <-watch:
		}
		n.check(n.cfg.Now())
	}
}

// check compares every subject with what was last notified about it.
func (n *Notifier) check(now time.Time) {
	acct := n.acct.State()
	if n.acct != nil && acct.Connected {
		// While the upstream is away the account's state is unknown:
		// upstream_down says so.
		bad := !acct.Online
		n.decide("account", bad, now, func() Notification {
			ev := Notification{Event: "account_online", Name: "account", Reason: acct.Reason, Priority: 4,
				Title:   fmt.Sprintf("obmux: QQ %d 已上线 account online", acct.SelfID),
				Message: fmt.Sprintf("QQ 账号 %d 恢复在线 · the QQ account %d is online again (%s)", acct.SelfID, acct.SelfID, acct.Reason)}
			if bad {
				ev = Notification{Event: "account_offline", Name: "account", Reason: acct.Reason, Priority: 8,
					Title:   fmt.Sprintf("obmux: QQ %d 已离线 account offline", acct.SelfID),
					Message: fmt.Sprintf("QQ 账号 %d 离线 · the QQ account %d is offline: %s", acct.SelfID, acct.SelfID, acct.Reason)}
			}
			return ev
		})
	}
	n.mon.mu.Lock()
	conns := make([]*Stats, 0, len(n.mon.conns))
	for s := range n.mon.conns {
		if s.Role == RoleUpstream || s.Role == RoleTarget {
			conns = append(conns, s)
		}
	}
	n.mon.mu.Unlock()
	seen := map[string]bool{"account": true}
	for _, s := range conns {
		s.mu.Lock()
		connected, since, downs, last, lastErr := s.connected, s.since, s.downs, s.lastDown, s.lastErr
		s.mu.Unlock()
		key := string(s.Role) + "/" + s.Name
		seen[key] = true
		if since.IsZero() && !connected {
			if s.Role != RoleUpstream {
				continue // not dialed yet: it waits for the upstream
			}
			since = n.start // never connected since obmux started
		}
		var bad bool
		switch {
		case connected:
		case now.Sub(since) >= n.cfg.After:
			bad = true
		default:
			continue // down, not yet for long enough: no change
		}
		reason := n.cfg.Redact(lastErr)
		switch {
		case downs > 0 && reason != "":
			reason = last.String() + ": " + reason
		case downs > 0:
			reason = last.String()
		case reason == "":
			reason = "never connected"
		}
		role, name, down := s.Role, s.Name, now.Sub(since).Round(time.Second)
		n.decide(key, bad, now, func() Notification {
			what := map[Role]string{RoleUpstream: "上游", RoleTarget: "目标"}[role]
			if bad {
				return Notification{Event: string(role) + "_down", Name: name, Reason: reason, Priority: 8,
					Title:   fmt.Sprintf("obmux: %s %s 已断开 %s down", what, name, role),
					Message: fmt.Sprintf("%s %s 断开已 %s · %s %s has been down for %s: %s", what, name, down, role, name, down, reason)}
			}
			return Notification{Event: string(role) + "_up", Name: name, Priority: 4,
				Title:   fmt.Sprintf("obmux: %s %s 已恢复 %s up", what, name, role),
				Message: fmt.Sprintf("%s %s 已重新连接 · %s %s is connected again", what, name, role, name)}
		})
	}
	for key := range n.subjects {
		if !seen[key] {
			delete(n.subjects, key)
		}
	}
}

// decide sends build()'s notification when subject key's state bad differs
// from the last one notified and the rate limit allows.
func (n *Notifier) decide(key string, bad bool, now time.Time, build func() Notification) {
	s := n.subjects[key]
	if s == nil {
		s = &subject{tokens: float64(n.cfg.Burst), refill: now}
		n.subjects[key] = s
	}
	if s.bad == bad {
		s.holding = false // it changed back while held: nothing to tell
		return
	}
	s.tokens = min(float64(n.cfg.Burst), s.tokens+now.Sub(s.refill).Seconds()/n.cfg.Refill.Seconds())
	s.refill = now
	if s.tokens < 1 {
		if !s.holding {
			s.holding = true
			n.suppressedC.Inc()
			n.cfg.Log.Info("notification held back by the rate limit: the latest state goes out when it allows",
				"subject", key, "every", n.cfg.Refill)
		}
		return
	}
	s.tokens--
	s.bad, s.holding = bad, false
	ev := build()
	ev.Time = now.UTC().Truncate(time.Second)
	if ev.SelfID == 0 {
		ev.SelfID = n.acct.State().SelfID
	}
	select {
	case n.queue <- ev:
		n.cfg.Log.Info("notifying", "event", ev.Event, "name", ev.Name, "reason", ev.Reason)
	default:
		n.droppedC.Inc()
		n.cfg.Log.Warn("notification dropped: the queue is full (the receiver is slow or down)", "event", ev.Event, "name", ev.Name)
	}
}

// send POSTs ev, retrying with backoff on network errors, 408, 429 and 5xx.
func (n *Notifier) send(ctx context.Context, ev Notification) {
	body, _ := json.Marshal(ev)
	delay := n.cfg.RetryMin
	var err error
	for attempt := 0; ; attempt++ {
		var retry bool
		if retry, err = n.post(ctx, body); err == nil {
			n.sentC.Inc()
			n.failed.Reset()
			n.cfg.Log.Debug("notification sent", "event", ev.Event, "name", ev.Name)
			return
		}
		if !retry || attempt >= n.cfg.Retries || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, n.cfg.RetryMax)
	}
	if ctx.Err() != nil {
		return
	}
	n.failedC.Inc()
	n.failed.Log(n.cfg.Log.With("event", ev.Event, "name", ev.Name), "notification failed", err,
		"check OBMUX_NOTIFY_URL and that the receiver is up; obmux_notifications_total{result=\"failed\"} counts every one")
}

// post makes one attempt and says whether a failure is worth retrying.
func (n *Notifier) post(ctx context.Context, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("%s", n.cfg.Redact(err.Error()))
	}
	req.Header.Set("Content-Type", "application/json")
	if n.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", n.cfg.UserAgent)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		// url.Error repeats the URL, and its query may hold a token.
		return true, fmt.Errorf("%s", n.cfg.Redact(err.Error()))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return true, fmt.Errorf("the receiver answered HTTP %d", c)
	default:
		return false, fmt.Errorf("the receiver answered HTTP %d (not retried)", c)
	}
}
