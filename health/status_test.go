package health

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/obmux/obmux/onebot"
)

func TestStatusDocument(t *testing.T) {
	mon := NewMonitor(NewMetrics(nil, "test"))
	acct := NewAccount(nil)
	up := mon.Track(RoleUpstream, "upstream")
	tg := mon.Track(RoleTarget, "nonebot")
	cl := mon.Track(RoleClient, "/")
	acct.Connected(true)
	acct.SetSelfID(10001)
	acct.SetNickname(10001, "<b>bot</b>")
	up.Up()
	tg.Up()
	tg.RTT(3 * time.Millisecond)
	tg.M.FramesOut[onebot.KindEvent].Add(10)
	tg.M.Dropped[DropQueueFull].Add(2)
	tg.M.API[OutcomeOK].Add(5)
	tg.M.API[OutcomeTimeout].Inc()
	tg.M.APIDuration.Observe(0.002)
	tg.M.APIDuration.Observe(0.004)
	tg.M.Replayed.Add(7)
	cl.Failed(errors.New(`dial "ws://x/?access_token=hunter2": refused`))
	up.M.FramesIn[onebot.KindEvent].Add(3)
	redact := regexp.MustCompile(`\?[^\s"]*`)
	started := time.Now().Add(-90 * time.Second)
	h := mon.StatusHandler(StatusConfig{Version: "v1.2.3", Started: started, Account: acct,
		Queue:  func() map[string]float64 { return map[string]float64{"nonebot": 4, "upstream": 99} },
		Redact: func(s string) string { return redact.ReplaceAllString(s, "?…") }})
	get := func(path string) (*httptest.ResponseRecorder, Status) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var s Status
		if path == "/status" {
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
				t.Fatalf("%s: %v", rec.Body, err)
			}
		}
		return rec, s
	}
	rec, s := get("/status")
	if rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q", rec.Header().Get("Content-Type"))
	}
	if strings.Contains(rec.Body.String(), "hunter2") {
		t.Errorf("the status shows a token: %s", rec.Body)
	}
	if s.Version != "v1.2.3" || s.UptimeSeconds < 90 || !s.Account.Up() || s.Account.SelfID != 10001 || s.Account.Nickname != "<b>bot</b>" {
		t.Errorf("status %+v", s)
	}
	if len(s.Connections) != 3 || s.Connections[0].Role != RoleUpstream || s.Connections[1].Name != "nonebot" || s.Connections[2].Role != RoleClient {
		t.Fatalf("connections %+v", s.Connections)
	}
	u, n, c := s.Connections[0], s.Connections[1], s.Connections[2]
	if !u.Connected || u.Events != 3 || u.QueueLength != 0 {
		t.Errorf("upstream %+v", u)
	}
	if !n.Connected || n.Events != 10 || n.QueueLength != 4 || n.Dropped != 2 || n.DroppedBy["queue_full"] != 2 ||
		n.API.OK != 5 || n.API.Timeout != 1 || n.API.AvgSeconds < 0.0029 || n.API.AvgSeconds > 0.0031 || n.API.P99Seconds != 0.005 ||
		n.Replayed != 7 || n.PingRTTSeconds != 0.003 || n.Filtered != nil {
		t.Errorf("target %+v", n)
	}
	if c.Connected || c.LastError != `dial "ws://x/?…": refused` || c.Since.IsZero() {
		t.Errorf("client %+v", c)
	}

	// The event rate: from the counter's growth between two polls a
	// second or more apart.
	sp := &statusPoller{mon: mon, cfg: StatusConfig{Redact: func(s string) string { return s }}, samples: map[*Stats]*sample{}}
	t0 := time.Now()
	sp.status(t0)
	tg.M.FramesOut[onebot.KindEvent].Add(30)
	st := sp.status(t0.Add(1500 * time.Millisecond))
	if r := st.Connections[1].EventsPerSecond; r != 20 {
		t.Errorf("events per second %v, want 20", r)
	}

	tg.Down(ReasonKeepaliveTimeout, errors.New("no pong within 20s: keepalive timeout"))
	_, s = get("/status")
	if n := s.Connections[1]; n.Connected || n.LastReason != "keepalive_timeout" || n.Disconnects != 1 ||
		!strings.Contains(n.LastError, "no pong") {
		t.Errorf("target after its end %+v", n)
	}
	tg.Untrack()
	if _, s = get("/status"); len(s.Connections) != 2 {
		t.Errorf("untracked target still shown: %+v", s.Connections)
	}

	rec, _ = get("/")
	body := rec.Body.String()
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || !strings.Contains(body, `fetch("status"`) ||
		rec.Header().Get("Content-Security-Policy") == "" {
		t.Errorf("page: %d %v", rec.Code, rec.Header())
	}
	// Self-contained and small: no external asset, a few KB.
	if regexp.MustCompile(`(src|href)=|https?://|@import`).MatchString(body) || len(body) > 12<<10 {
		t.Errorf("the page loads something from elsewhere, or is %d bytes", len(body))
	}
	// Data is put in with textContent, never as HTML.
	if strings.Contains(body, "innerHTML") {
		t.Error("the page uses innerHTML")
	}
	if rec, _ := get("/nothing"); rec.Code != 404 {
		t.Errorf("/nothing: %d", rec.Code)
	}
}

func TestCollectorValues(t *testing.T) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "q", Help: "q"}, []string{"name"})
	g.WithLabelValues("a").Set(3)
	g.WithLabelValues("b").Set(1)
	got := CollectorValues(g, "name")()
	if len(got) != 2 || got["a"] != 3 || got["b"] != 1 {
		t.Errorf("%v", got)
	}
}
