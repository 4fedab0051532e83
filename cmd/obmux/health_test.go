package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/internal/sim"
)

type heartbeat struct {
	Time          int64  `json:"time"`
	SelfID        int64  `json:"self_id"`
	MetaEventType string `json:"meta_event_type"`
	Status        struct {
		Online bool `json:"online"`
		Good   bool `json:"good"`
	} `json:"status"`
	Interval int64 `json:"interval"`
}

func isHeartbeat(b []byte) bool { return bytes.Contains(b, []byte(`"meta_event_type":"heartbeat"`)) }

// nextHeartbeat skips to p's next heartbeat.
func nextHeartbeat(t *testing.T, p *sim.Peer) heartbeat {
	t.Helper()
	for {
		if b := next(t, p); isHeartbeat(b) {
			var h heartbeat
			if err := json.Unmarshal(b, &h); err != nil {
				t.Fatalf("bad heartbeat %s: %v", b, err)
			}
			return h
		}
	}
}

// Every target gets its own heartbeats at the interval, never doubled.
func TestHeartbeatsOnEveryTarget(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	a, b := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL,
		"OBMUX_HEARTBEAT_INTERVAL=100ms")
	up.connected()
	pa, pb := a.accept(), b.accept()
	begin := time.Now()
	const n = 5
	for _, p := range []*sim.Peer{pa, pb} {
		for range n {
			h := nextHeartbeat(t, p)
			if h.SelfID != testSelfID || h.Interval != 100 || !h.Status.Online || !h.Status.Good {
				t.Fatalf("heartbeat %+v", h)
			}
		}
	}
	// n heartbeats per target need n intervals; doubled timers would need half.
	if el := time.Since(begin); el < n*100*time.Millisecond*8/10 {
		t.Errorf("%d heartbeats in %v: more than one per interval", n, el)
	}
	// Counted once the write returned, which may be after the peer read it.
	eventually(t, fmt.Sprintf("heartbeats_sent_total to reach %d", n), func() bool {
		return in.metric("obmux_heartbeats_sent_total", "role=target", "name=a") >= n
	})
}

// A heartbeat does not wait behind a backlog of events.
func TestHeartbeatJumpsTheQueue(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_HEARTBEAT_INTERVAL=50ms",
		"OBMUX_QUEUE_SIZE=100000", "OBMUX_PING_INTERVAL=0")
	up.connected()
	p := tg.accept()
	p.Pause()
	up.send(event(0))
	paused := time.Now()
	big := bytes.Repeat([]byte("x"), 4000)
	sent := 0
	// Fill the socket buffers and then obmux's queue, for longer than a
	// heartbeat interval.
	for in.metric("obmux_queue_length", "name=a") < 200 || time.Since(paused) < 200*time.Millisecond {
		for range 50 {
			sent++
			up.send(sim.PrivateMessage(testSelfID, 1, int64(sent), string(big)))
		}
		if sent > 20000 {
			t.Fatal("the queue did not fill")
		}
	}
	queued := in.metric("obmux_queue_length", "name=a")
	p.Resume()
	// Count the events after the first heartbeat: those were queued behind it.
	seen, after, hb := -1, 0, false
	for seen < sent {
		b := next(t, p)
		if isHeartbeat(b) {
			hb = true
			continue
		}
		seen++
		if hb {
			after++
		}
	}
	if !hb || after == 0 {
		t.Fatalf("no heartbeat went ahead of the %v queued events (heartbeat seen: %v, events after it: %d)", queued, hb, after)
	}
	t.Logf("%d events sent, %v queued at resume, %d delivered after the first heartbeat", sent, queued, after)
}

// A target that stops reading (and so answering pings) is found dead within
// ping interval + timeout and redialed; the upstream likewise.
func TestKeepaliveTimeoutRedials(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL,
		"OBMUX_PING_INTERVAL=50ms", "OBMUX_PING_TIMEOUT=100ms", "OBMUX_HEARTBEAT_INTERVAL=0")
	u1 := up.connected()
	p := tg.accept()
	eventually(t, "a ping RTT", func() bool { return in.metric("obmux_ping_rtt_seconds", "role=target", "name=a") > 0 })
	p.Pause()
	up.send(event(1)) // the reader stops after this one
	stuck := time.Now()
	p2 := tg.accept() // redialed
	if el := time.Since(stuck); el > 2*time.Second {
		t.Errorf("stuck target found after %v", el)
	}
	if got := in.metric("obmux_disconnects_total", "role=target", "name=a", "reason=keepalive_timeout"); got != 1 {
		t.Errorf("keepalive_timeout disconnects = %v", got)
	}
	if !strings.Contains(in.log.String(), "keepalive timeout") {
		t.Error("no 'keepalive timeout' in the log")
	}
	p.Close()

	u1.Pause()
	p2.Send(ctxT(t), []byte(`{"action":"get_status","echo":1}`)) // the upstream's reader stops after this one
	up.connected()
	if got := in.metric("obmux_disconnects_total", "role=upstream", "reason=keepalive_timeout"); got != 1 {
		t.Errorf("upstream keepalive_timeout disconnects = %v", got)
	}
	u1.Close()
}

// lastFrame returns the last frame p read before its connection ended
// (nil if none), waiting for the end.
func lastFrame(p *sim.Peer) []byte {
	var last []byte
	for f := range p.Frames {
		last = f
	}
	return last
}

// checkTargetShutDown checks that the target connection p (named name) got
// lifecycle disable as its last frame, then close 1001 "obmux shutting
// down".
func checkTargetShutDown(t *testing.T, name string, p *sim.Peer) {
	t.Helper()
	if last := lastFrame(p); !bytes.Contains(last, []byte(`"meta_event_type":"lifecycle","sub_type":"disable"`)) {
		t.Errorf("target %s: last frame before the close is not lifecycle disable: %s", name, last)
	}
	if p.CloseStatus() != websocket.StatusGoingAway || !strings.Contains(p.Err.Error(), "obmux shutting down") {
		t.Errorf("target %s closed with %v, want 1001", name, p.Err)
	}
}

// checkUpstreamShutDown waits for the upstream connection u to end and
// checks that obmux closed it with 1001.
func checkUpstreamShutDown(t *testing.T, u *sim.Peer) {
	t.Helper()
	<-u.Done
	if u.CloseStatus() != websocket.StatusGoingAway {
		t.Errorf("upstream closed with %v, want 1001", u.Err)
	}
}

// On shutdown every target gets lifecycle disable, then close 1001, and obmux
// returns within the shutdown timeout.
func TestShutdownSendsDisableThenClose(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	a, b := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL,
		"OBMUX_SHUTDOWN_TIMEOUT=3s")
	u := up.connected()
	pa, pb := a.accept(), b.accept()
	took := in.stop()
	checkTargetShutDown(t, "a", pa)
	checkTargetShutDown(t, "b", pb)
	checkUpstreamShutDown(t, u)
	if took > 3*time.Second {
		t.Errorf("shutdown took %v", took)
	}
}

// A target that does not read cannot hold shutdown beyond its timeout.
func TestShutdownTimeoutBoundsAStuckTarget(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_SHUTDOWN_TIMEOUT=300ms",
		"OBMUX_PING_INTERVAL=0", "OBMUX_QUEUE_SIZE=100000")
	up.connected()
	p := tg.accept()
	p.Pause()
	up.send(event(0))
	big := string(bytes.Repeat([]byte("y"), 60000))
	for i := 0; in.metric("obmux_queue_length", "name=a") < 5; i++ {
		up.send(sim.PrivateMessage(testSelfID, 1, int64(i), big))
	}
	if took := in.stop(); took > 2*time.Second {
		t.Errorf("shutdown took %v with a stuck target, timeout 300ms", took)
	}
	p.Close()
}

// The upstream goes away and comes back: targets stay connected, heartbeats
// say online false then true, API calls in between get 1502, /readyz
// follows, events resume, no target reconnects.
func TestUpstreamRestart(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	addr := up.Addr
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_HEARTBEAT_INTERVAL=50ms")
	healthcheckEnv := []string{"OBMUX_METRICS_LISTEN=" + in.addrs.Metrics}
	up.connected()
	p := tg.accept()
	eventually(t, "ready", func() bool { code, _ := in.get("/readyz"); return code == 200 })
	var out bytes.Buffer
	if err := run(ctxT(t), []string{"healthcheck"}, healthcheckEnv, &out, &out); err != nil {
		t.Errorf("healthcheck while ready: %v %s", err, out.String())
	}
	if h := nextHeartbeat(t, p); !h.Status.Online {
		t.Fatalf("heartbeat while up: %+v", h)
	}

	up.Close()
	for h := nextHeartbeat(t, p); h.Status.Online; h = nextHeartbeat(t, p) {
	}
	if code, body := in.get("/readyz"); code != 503 || !strings.Contains(body, `"role":"upstream"`) {
		t.Errorf("/readyz while down: %d %s", code, body)
	}
	if code, _ := in.get("/healthz"); code != 200 {
		t.Errorf("/healthz while down: %d", code)
	}
	if err := run(ctxT(t), []string{"healthcheck"}, healthcheckEnv, &out, &out); exitCode(err, &out) != 1 {
		t.Errorf("healthcheck while down: %v", err)
	}
	p.Send(ctxT(t), []byte(`{"action":"send_msg","echo":3}`))
	for r := next(t, p); !bytes.Contains(r, []byte(`"retcode":1502`)) || !bytes.HasSuffix(r, []byte(`"echo":3}`)); r = next(t, p) {
		if !isHeartbeat(r) {
			t.Fatalf("want 1502, got %s", r)
		}
	}

	up2 := newUpstream(t, addr)
	up2.connected()
	for h := nextHeartbeat(t, p); !h.Status.Online; h = nextHeartbeat(t, p) {
	}
	up2.send(event(7))
	if got := nextEvent(t, p); !bytes.Equal(got, event(7)) {
		t.Fatalf("after restart got %s", got)
	}
	eventually(t, "ready again", func() bool { code, _ := in.get("/readyz"); return code == 200 })
	if got := in.metric("obmux_connects_total", "role=target", "name=a"); got != 1 {
		t.Errorf("target connects = %v, want 1 (no reconnect)", got)
	}
}

// The upstream comes back as another account: every target gets disable,
// a close (counted as self_id_changed), and is redialed with the new
// X-Self-ID.
func TestSelfIDChangeRedialsTargets(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	addr := up.Addr
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL)
	up.connected()
	p := tg.accept()
	up.Close()
	up2 := newUpstream(t, addr)
	up2.selfID.Store(30003)
	up2.connected()
	if last := lastFrame(p); !bytes.Contains(last, []byte(`"self_id":10001,"post_type":"meta_event","meta_event_type":"lifecycle","sub_type":"disable"`)) {
		t.Errorf("last frame before close: %s", last)
	}
	p2 := tg.accept()
	if got := p2.Header.Get("X-Self-ID"); got != "30003" {
		t.Errorf("redialed with X-Self-ID %s", got)
	}
	if p.CloseStatus() != websocket.StatusNormalClosure {
		t.Errorf("closed with %v, want 1000", p.Err)
	}
	if got := in.metric("obmux_disconnects_total", "role=target", "name=a", "reason=self_id_changed"); got != 1 {
		t.Errorf("disconnects{reason=self_id_changed} = %v, want 1", got)
	}
	if got := in.metric("obmux_disconnects_total", "role=target", "name=a", "reason=replaced"); got != 0 {
		t.Errorf("disconnects{reason=replaced} = %v, want 0", got)
	}
}

// Health endpoints list every connection.
func TestHealthEndpointsListConnections(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_NONEBOT_URL="+tg.URL, "OBMUX_TARGET_DOWN_URL=ws://127.0.0.1:1/x")
	up.connected()
	tg.accept()
	eventually(t, "ready", func() bool { code, _ := in.get("/readyz"); return code == 200 })
	_, body := in.get("/healthz")
	var h struct {
		Status      string
		Connections []struct {
			Role, Name string
			Connected  bool
			LastError  string `json:"last_error"`
		}
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(h.Connections)
	for _, want := range []string{"{upstream upstream true ", "{target nonebot true ", "{target down false "} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in %s", want, got)
		}
	}
	_ = context.Background
}
