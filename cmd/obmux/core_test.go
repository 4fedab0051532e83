package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/internal/sim"
)

// Events reach every target in upstream order, byte for byte, and the
// upstream's own meta events are not forwarded.
func TestDialUpstreamFansOutToThreeTargets(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	up.Check = bearer("up-secret")
	tgs := []*target{newTarget(t), newTarget(t), newTarget(t)}
	env := []string{"OBMUX_UPSTREAM_URL=" + up.URL, "OBMUX_UPSTREAM_TOKEN=up-secret", "OBMUX_TARGET_B_TOKEN=tb"}
	for i, tg := range tgs {
		env = append(env, fmt.Sprintf("OBMUX_TARGET_%c_URL=%s", 'A'+i, tg.URL))
	}
	start(t, env...)
	up.connected()
	peers := make([]*sim.Peer, len(tgs))
	for i, tg := range tgs {
		peers[i] = tg.accept()
	}
	// Headers a framework needs, exactly.
	for i, p := range peers {
		h := p.Header
		if h.Get("X-Self-ID") != "10001" || h.Get("X-Client-Role") != "Universal" || h.Get("User-Agent") != "obmux/dev" {
			t.Errorf("target %d headers: %v", i, h)
		}
		want := ""
		if i == 1 {
			want = "Bearer tb"
		}
		if got := h.Get("Authorization"); got != want {
			t.Errorf("target %d Authorization = %q, want %q", i, got, want)
		}
	}
	up.send(sim.Lifecycle(testSelfID, "connect"))
	up.send([]byte(`{"time":1,"self_id":10001,"post_type":"meta_event","meta_event_type":"heartbeat","status":{"online":true,"good":true},"interval":30000}`))
	const n = 200
	sent := make([][]byte, n+1)
	for i := 1; i <= n; i++ {
		sent[i] = event(i)
		up.send(sent[i])
	}
	for ti, p := range peers {
		for i := 1; i <= n; i++ {
			if got := nextEvent(t, p); !bytes.Equal(got, sent[i]) {
				t.Fatalf("target %d event %d:\n got %s\nwant %s", ti, i, got, sent[i])
			}
		}
	}
}

// bearer refuses requests without the token: 401 missing, 403 wrong.
func bearer(token string) func(r *http.Request) int {
	return func(r *http.Request) int {
		switch r.Header.Get("Authorization") {
		case "":
			return http.StatusUnauthorized
		case "Bearer " + token:
			return 0
		}
		return http.StatusForbidden
	}
}

// A target that refuses (403) does not stop the others, and is retried.
func TestRefusingTargetDoesNotStopOthers(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	good1, good2, bad := newTarget(t), newTarget(t), newTarget(t)
	refused := make(chan struct{}, 100)
	bad.Check = func(*http.Request) int { refused <- struct{}{}; return http.StatusForbidden }
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_GOOD1_URL="+good1.URL,
		"OBMUX_TARGET_GOOD2_URL="+good2.URL, "OBMUX_TARGET_NONEBOT_URL="+bad.URL)
	up.connected()
	p1, p2 := good1.accept(), good2.accept()
	up.send(event(1))
	for _, p := range []*sim.Peer{p1, p2} {
		if got := nextEvent(t, p); !bytes.Equal(got, event(1)) {
			t.Fatalf("got %s", got)
		}
	}
	for range 2 { // refused, then retried
		select {
		case <-refused:
		case <-ctxT(t).Done():
			t.Fatal("the refusing target was not retried")
		}
	}
	eventually(t, "the 403 hint in the log", func() bool {
		return strings.Contains(in.log.String(), "OBMUX_TARGET_NONEBOT_TOKEN") && strings.Contains(in.log.String(), "/onebot/v11/ws")
	})
	log := in.log.String() // one snapshot: redials go on logging meanwhile
	if strings.Count(log, `"msg":"cannot connect to target"`) != strings.Count(log, `"level":"WARN","msg":"cannot connect to target"`)+
		strings.Count(log, `"level":"DEBUG","msg":"cannot connect to target"`) {
		t.Error("unexpected log levels")
	}
	if n := strings.Count(log, `"level":"WARN","msg":"cannot connect to target"`); n != 1 {
		t.Errorf("the same dial failure was logged at warn %d times, want once", n)
	}
}

// obmux listens for the implementation's reverse WS: token 401/403 before the
// upgrade, 409 for another account, replacement for the same one.
func TestListenUpstream(t *testing.T) {
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_TOKEN=s3cret", "OBMUX_TARGET_A_URL="+tg.URL)
	url := "ws://" + in.addrs.Upstream + "/onebot/v11/ws"
	hdr := func(auth string, self string) http.Header {
		h := http.Header{"X-Self-ID": {self}, "X-Client-Role": {"Universal"}}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		return h
	}
	for _, c := range []struct {
		auth string
		code int
	}{{"", 401}, {"Bearer wrong", 403}} {
		_, resp, err := sim.Dial(ctxT(t), url, hdr(c.auth, "10001"))
		if err == nil || resp == nil || resp.StatusCode != c.code {
			t.Fatalf("auth %q: want HTTP %d, got %v %v", c.auth, c.code, resp, err)
		}
	}
	// go-cqhttp's "Token" scheme, any case.
	first, _, err := sim.Dial(ctxT(t), url, hdr("token s3cret", "10001"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	p := tg.accept()
	if p.Header.Get("X-Self-ID") != "10001" {
		t.Fatalf("X-Self-ID %q", p.Header.Get("X-Self-ID"))
	}
	ev := event(1)
	first.Send(ctxT(t), ev)
	if got := nextEvent(t, p); !bytes.Equal(got, ev) {
		t.Fatalf("got %s", got)
	}
	// Another account while one is connected: 409.
	_, resp, err := sim.Dial(ctxT(t), url+"?access_token=s3cret", hdr("", "20002"))
	if err == nil || resp == nil || resp.StatusCode != http.StatusConflict {
		t.Fatalf("want 409, got %v %v", resp, err)
	}
	// The same account again replaces the first connection.
	second, _, err := sim.Dial(ctxT(t), url, hdr("Bearer s3cret", "10001"))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	<-first.Done
	if first.CloseStatus() != websocket.StatusGoingAway {
		t.Errorf("replaced connection closed with %v", first.Err)
	}
	second.Send(ctxT(t), event(2))
	if got := nextEvent(t, p); !bytes.Equal(got, event(2)) {
		t.Fatalf("got %s", got)
	}
	if got := in.metric("obmux_disconnects_total", "role=upstream", "reason=replaced"); got != 1 {
		t.Errorf("replaced disconnects = %v", got)
	}
}

// API calls: echoes of every kind come back exactly, to the caller only.
func TestAPICallsKeepTheirEcho(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	a, b := newTarget(t), newTarget(t)
	start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL)
	up.connected()
	pa, pb := a.accept(), b.accept()
	echoes := []string{`"17"`, `1`, `{"seq":7}`, `null`, `12345678901234567890123`, `""`, `"中文\"q"`}
	var wg sync.WaitGroup
	for _, p := range []*sim.Peer{pa, pb} {
		wg.Go(func() {
			for _, e := range echoes {
				p.Send(context.Background(), []byte(`{"action":"send_msg","params":{"user_id":1,"message":"hi"},"echo":`+e+`}`))
			}
			p.Send(context.Background(), []byte(`{"action":"send_msg","params":{"message":"no echo"}}`))
		})
	}
	wg.Wait()
	for name, p := range map[string]*sim.Peer{"a": pa, "b": pb} {
		got := map[string]int{}
		for range len(echoes) + 1 {
			r := nextEvent(t, p)
			var resp struct {
				Status string          `json:"status"`
				Echo   json.RawMessage `json:"echo"`
			}
			if err := json.Unmarshal(r, &resp); err != nil || resp.Status != "ok" {
				t.Fatalf("%s: bad response %s", name, r)
			}
			if resp.Echo == nil {
				got["<absent>"]++
			} else {
				got[string(resp.Echo)]++
			}
			if bytes.Contains(r, []byte("obmux:")) {
				t.Errorf("%s: obmux's own echo leaked: %s", name, r)
			}
		}
		for _, e := range append(echoes, "<absent>") {
			if got[e] != 1 {
				t.Errorf("%s: echo %s came back %d times (all: %v)", name, e, got[e], got)
			}
		}
	}
}

// 1504 when the upstream does not answer in time, 1502 when none is
// connected, 1400 for what is not a request; all with the caller's echo.
func TestAPIFailuresObmuxAnswers(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	up.silent.Store(true)
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_API_TIMEOUT=200ms", "OBMUX_SELF_ID=10001")
	up.connected()
	p := tg.accept()
	// With OBMUX_SELF_ID set, the target may connect before the upstream.
	eventually(t, "upstream up", func() bool { return in.metric("obmux_connection_up", "role=upstream") == 1 })

	p.Send(ctxT(t), []byte(`{"action":"get_status","echo":{"seq":7}}`))
	want := `{"status":"failed","retcode":1504,"data":null,"message":"upstream timeout","wording":"upstream timeout","echo":{"seq":7}}`
	if got := nextEvent(t, p); string(got) != want {
		t.Fatalf("timeout:\n got %s\nwant %s", got, want)
	}
	for _, c := range []struct{ frame, contains string }{
		{`not json`, `"retcode":1400`},
		{`{"params":{},"echo":5}`, `"echo":5`},
		{`{"action":"x","echo":1,"echo":2}`, `duplicate`},
		{`{"post_type":"message","echo":"e"}`, `"echo":"e"`},
	} {
		p.Send(ctxT(t), []byte(c.frame))
		got := string(nextEvent(t, p))
		if !strings.Contains(got, `"retcode":1400`) || !strings.Contains(got, c.contains) {
			t.Errorf("%s -> %s", c.frame, got)
		}
	}
	up.Close()
	eventually(t, "upstream down", func() bool { return in.metric("obmux_connection_up", "role=upstream") == 0 })
	p.Send(ctxT(t), []byte(`{"action":"send_msg","echo":"9"}`))
	want = `{"status":"failed","retcode":1502,"data":null,"message":"upstream not connected","wording":"upstream not connected","echo":"9"}`
	if got := nextEvent(t, p); string(got) != want {
		t.Fatalf("upstream down:\n got %s\nwant %s", got, want)
	}
	if got := in.metric("obmux_api_requests_total", "name=a", "outcome=timeout"); got != 1 {
		t.Errorf("timeouts = %v", got)
	}
	if got := in.metric("obmux_api_requests_total", "name=a", "outcome=upstream_down"); got != 1 {
		t.Errorf("upstream_down = %v", got)
	}
}

// NapCat's streaming actions: every frame reaches the caller, the call ends
// with the last.
func TestStreamingResponses(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	up.custom = func(p *sim.Peer, req []byte) bool {
		var r sim.Request
		json.Unmarshal(req, &r)
		if r.Action != "download_file_stream" {
			return false
		}
		for _, typ := range []string{"stream", "stream", "response"} {
			p.Send(context.Background(), []byte(`{"status":"ok","retcode":0,"data":{"type":"`+typ+`"},"stream":"stream-action","echo":`+string(r.Echo)+`}`))
		}
		return true
	}
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL)
	up.connected()
	p := tg.accept()
	p.Send(ctxT(t), []byte(`{"action":"download_file_stream","params":{},"echo":"s1"}`))
	for _, typ := range []string{"stream", "stream", "response"} {
		got := string(nextEvent(t, p))
		if !strings.Contains(got, `"type":"`+typ+`"`) || !strings.HasSuffix(got, `"echo":"s1"}`) {
			t.Fatalf("got %s", got)
		}
	}
	eventually(t, "the call to end", func() bool { return in.metric("obmux_api_requests_total", "name=a", "outcome=ok") == 1 })
}

// A bad configuration stops obmux before it serves, with exit status 2 and
// every problem on stderr. What each bad value says is config's table test
// (config/testdata/invalid-*.env).
func TestBadConfigurationExitsWith2(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), nil, []string{"OBMUX_QUEUE_SIZE=x", "OBMUX_LOG_LEVEL=loud", "OBMUX_TARGET_A_TOKEN=hunter2"}, nil, &stderr)
	if code := exitCode(err, &stderr); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	for _, want := range []string{"invalid configuration:", "OBMUX_QUEUE_SIZE", "OBMUX_LOG_LEVEL", "OBMUX_TARGET_A_URL: not set"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "hunter2") {
		t.Errorf("the token is on stderr:\n%s", stderr.String())
	}
}

// Several connections replacing the current one at once: exactly one stays,
// events arrive once, and API calls go to the one that stayed. A split
// (non-universal) connection is refused with a reason.
func TestListenUpstreamConcurrentReplacements(t *testing.T) {
	tg := newTarget(t)
	in := start(t, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_HEARTBEAT_INTERVAL=0")
	url := "ws://" + in.addrs.Upstream + "/onebot/v11/ws"
	hdr := http.Header{"X-Self-ID": {"10001"}, "X-Client-Role": {"Universal"}}
	_, resp, err := sim.Dial(ctxT(t), url, http.Header{"X-Self-ID": {"10001"}, "X-Client-Role": {"Event"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("X-Client-Role Event: want HTTP 400, got %v %v", resp, err)
	}
	first, _, err := sim.Dial(ctxT(t), url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	p := tg.accept()
	const n = 4
	conns := make(chan *sim.Peer, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c, _, err := sim.Dial(ctxT(t), url, hdr)
			if err != nil {
				t.Error(err)
				return
			}
			conns <- c
		})
	}
	wg.Wait()
	close(conns)
	all := []*sim.Peer{first}
	for c := range conns {
		defer c.Close()
		all = append(all, c)
	}
	open := func() []*sim.Peer {
		var o []*sim.Peer
		for _, c := range all {
			select {
			case <-c.Done:
			default:
				o = append(o, c)
			}
		}
		return o
	}
	eventually(t, "all but one upstream connection closed", func() bool { return len(open()) == 1 })
	live := open()[0]
	eventually(t, "one upstream up", func() bool { return in.metric("obmux_connection_up", "role=upstream") == 1 })
	ev := event(7)
	live.Send(ctxT(t), ev)
	if got := nextEvent(t, p); !bytes.Equal(got, ev) {
		t.Fatalf("got %s", got)
	}
	p.Send(ctxT(t), []byte(`{"action":"get_status","echo":"x"}`))
	for {
		req := next(t, live)
		if bytes.Contains(req, []byte(`"get_status"`)) {
			break
		}
	}
}

// The mistakes a NapCat user makes first are logged with what to change: a
// reverse-WS URL without /ws, and a port another program holds.
func TestWrongUpstreamPathAndBusyPortAreExplained(t *testing.T) {
	in := start(t)
	_, resp, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Upstream+"/onebot/v11", http.Header{"X-Self-ID": {"10001"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("want HTTP 404, got %v %v", resp, err)
	}
	eventually(t, "the wrong path logged", func() bool {
		l := in.log.String()
		return strings.Contains(l, "upstream connection on a wrong path") && strings.Contains(l, "/onebot/v11/ws")
	})
	err = run(context.Background(), nil, []string{"OBMUX_METRICS_LISTEN=" + in.addrs.Metrics}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "OBMUX_METRICS_LISTEN="+in.addrs.Metrics) {
		t.Fatalf("a busy port: want an error naming OBMUX_METRICS_LISTEN, got %v", err)
	}
}
