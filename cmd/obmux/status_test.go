package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/internal/sim"
)

// status fetches and decodes GET /status.
func (in *instance) status() health.Status {
	in.t.Helper()
	code, body := in.get("/status")
	var s health.Status
	if code != 200 || json.Unmarshal([]byte(body), &s) != nil {
		in.t.Fatalf("/status: %d %s", code, body)
	}
	return s
}

// The account's state end to end: the upstream's heartbeat and bot_offline
// notice reach /status, obmux_account_online and a real notification
// receiver; a target that goes away is notified after OBMUX_NOTIFY_AFTER,
// with its reason, and again when it is back; no token shows anywhere.
func TestAccountStatusAndNotifications(t *testing.T) {
	got := make(chan health.Notification, 32)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var n health.Notification
		if err := json.Unmarshal(b, &n); err != nil {
			t.Errorf("notification not JSON: %s", b)
		}
		got <- n
	}))
	defer recv.Close()
	next := func(event string) health.Notification {
		t.Helper()
		for {
			select {
			case n := <-got:
				if n.Event == event {
					return n
				}
				t.Logf("notification %+v", n)
			case <-ctxT(t).Done():
				t.Fatalf("no %s notification", event)
			}
		}
	}
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_NB_URL="+tg.URL+"?access_token=hunter2",
		"OBMUX_NOTIFY_URL="+recv.URL+"/hook?token=s3cret", "OBMUX_NOTIFY_AFTER=200ms")
	up.connected()
	p := tg.accept()
	eventually(t, "the account online with its nickname", func() bool {
		s := in.status()
		return s.Account.Up() && s.Account.SelfID == testSelfID && s.Account.Nickname == "obmux-sim" &&
			in.metric("obmux_account_online") == 1
	})

	up.send([]byte(`{"time":1,"self_id":10001,"post_type":"notice","notice_type":"bot_offline","user_id":10001,"tag":"KickedOffLine","message":"已在另一台设备登录"}`))
	n := next("account_offline")
	if n.SelfID != testSelfID || !strings.Contains(n.Reason, "已在另一台设备登录") {
		t.Errorf("%+v", n)
	}
	if e := nextEvent(t, p); !strings.Contains(string(e), `"bot_offline"`) {
		t.Errorf("the target did not get the notice: %s", e)
	}
	s := in.status()
	if s.Account.Up() || !strings.HasPrefix(s.Account.Reason, "bot_offline: KickedOffLine") ||
		in.metric("obmux_account_online") != 0 || in.metric("obmux_account_transitions_total", "to=offline") != 1 {
		t.Errorf("after bot_offline: %+v", s.Account)
	}
	up.send([]byte(`{"time":2,"self_id":10001,"post_type":"meta_event","meta_event_type":"heartbeat","status":{"online":false,"good":false},"interval":5000}`))
	up.send([]byte(`{"time":3,"self_id":10001,"post_type":"meta_event","meta_event_type":"heartbeat","status":{"online":true,"good":true},"interval":5000}`))
	next("account_online")
	eventually(t, "the account online again", func() bool {
		return in.metric("obmux_account_online") == 1 && in.metric("obmux_account_transitions_total", "to=online") == 1
	})

	// The target goes away: target_down after NOTIFY_AFTER, with its reason.
	tg.Close()
	n = next("target_down")
	if n.Name != "nb" || n.Reason == "" || strings.Contains(n.Reason, "hunter2") {
		t.Errorf("%+v", n)
	}
	s = in.status()
	if c := s.Connections[1]; c.Name != "nb" || c.Connected || c.LastReason == "" || c.Disconnects != 1 {
		t.Errorf("target on /status: %+v", c)
	}
	for _, path := range []string{"/status", "/"} {
		if _, body := in.get(path); strings.Contains(body, "hunter2") || strings.Contains(body, "s3cret") {
			t.Errorf("%s shows a token: %s", path, body)
		}
	}
	if strings.Contains(in.log.String(), "s3cret") {
		t.Error("the log shows OBMUX_NOTIFY_URL's token")
	}
}

// /readyz tells the truth about the targets: before the upstream connects,
// each says why it is not dialed; then N of M connected, degraded while one
// is down, and the HTTP status still only about the upstream.
func TestReadyzCountsTargetsAndSaysWhy(t *testing.T) {
	good := newTarget(t)
	gone := newTarget(t)
	gone.Close()
	in := start(t, "OBMUX_TARGET_GOOD_URL="+good.URL, "OBMUX_TARGET_GONE_URL="+gone.URL)
	readyz := func() (int, health.Health) {
		t.Helper()
		code, body := in.get("/readyz")
		var h health.Health
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Fatalf("/readyz: %v: %s", err, body)
		}
		return code, h
	}
	var code int
	var h health.Health
	eventually(t, "both targets waiting for the self_id", func() bool {
		code, h = readyz()
		waiting := 0
		for _, c := range h.Connections {
			if c.Role == health.RoleTarget && c.Waiting == "waiting for the upstream: self_id unknown" {
				waiting++
			}
		}
		return waiting == 2
	})
	if code != 503 || h.Status != "unavailable" || h.TargetsConnected != "0 of 2" {
		t.Errorf("before the upstream: %d %+v", code, h)
	}
	if s := in.status(); s.Connections[1].Waiting != "waiting for the upstream: self_id unknown" {
		t.Errorf("/status: %+v", s.Connections[1])
	}
	up, _, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Upstream+"/onebot/v11/ws", http.Header{"X-Self-ID": {"10001"}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	good.accept()
	// The good target can connect before gone's first dial has failed, so
	// wait for that failure too: it is what /readyz must then say.
	goneFailed := func() bool {
		for _, c := range h.Connections {
			if c.Name == "gone" {
				return c.LastError != ""
			}
		}
		return false
	}
	eventually(t, "ready, degraded, 1 of 2, gone's dial error shown", func() bool {
		code, h = readyz()
		return code == 200 && h.Status == "degraded" && h.TargetsConnected == "1 of 2" && h.TargetsUp == 1 && h.TargetsTotal == 2 && goneFailed()
	})
	for _, c := range h.Connections {
		if c.Waiting != "" {
			t.Errorf("%s still waiting: %q", c.Name, c.Waiting)
		}
	}
}
