package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/internal/sim"
)

// The upstream cut during 100 calls in flight: every caller gets exactly one
// answer, none hangs, nothing stays pending.
func TestUpstreamCutDuringCalls(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	up.silent.Store(true)
	a, b := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL,
		"OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_API_TIMEOUT=5s", "OBMUX_SELF_ID=10001")
	u := up.connected()
	peers := []*sim.Peer{a.accept(), b.accept()}
	// Targets are greeted with OBMUX_SELF_ID before the upstream may be up.
	eventually(t, "upstream up", func() bool { return in.metric("obmux_connection_up", "role=upstream") == 1 })
	for i := range 100 {
		peers[i%2].Send(ctxT(t), fmt.Appendf(nil, `{"action":"send_msg","echo":%d}`, i))
	}
	// Wait until the upstream has all 100 (obmux's own get_login_info aside),
	// answer every tenth, then cut.
	var reqs []sim.Request
	ctx := ctxT(t)
	for len(reqs) < 100 {
		var r sim.Request
		select {
		case req := <-up.requests:
			json.Unmarshal(req, &r)
		case <-ctx.Done():
			t.Fatalf("the upstream got %d of 100 calls", len(reqs))
		}
		if r.Action != "get_login_info" {
			reqs = append(reqs, r)
		}
	}
	for i := 0; i < 100; i += 10 {
		u.Send(ctxT(t), sim.Response(`"ok"`, 0, "null", reqs[i].Echo))
	}
	// The implementation goes away with its connection: obmux cannot redial
	// it, whose get_login_info on a new connection would be pending below.
	up.Close()
	answers := map[string]int{}
	for i := range 100 {
		r := nextEvent(t, peers[i%2])
		var resp struct {
			Retcode int             `json:"retcode"`
			Echo    json.RawMessage `json:"echo"`
		}
		json.Unmarshal(r, &resp)
		if resp.Retcode != 0 && resp.Retcode != 1502 && resp.Retcode != 1504 {
			t.Fatalf("unexpected answer %s", r)
		}
		answers[string(resp.Echo)]++
	}
	for i := range 100 {
		if answers[fmt.Sprint(i)] != 1 {
			t.Errorf("call %d answered %d times", i, answers[fmt.Sprint(i)])
		}
	}
	if got := in.metric("obmux_api_pending_requests"); got != 0 {
		t.Errorf("pending after the cut: %v", got)
	}
}

// A blackholed target (NAT gone: no bytes either way) is found by keepalive
// within ping interval + timeout.
func TestBlackholedTargetIsDetected(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	fp := faultProxy(t, tg.Addr)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL=ws://"+fp.Addr+"/onebot/v11/ws",
		"OBMUX_PING_INTERVAL=100ms", "OBMUX_PING_TIMEOUT=200ms")
	up.connected()
	tg.accept()
	fp.Blackhole(true)
	begin := time.Now()
	eventually(t, "the keepalive timeout", func() bool {
		return in.metric("obmux_disconnects_total", "name=a", "reason=keepalive_timeout") == 1
	})
	if el := time.Since(begin); el > 300*time.Millisecond+time.Second {
		t.Errorf("detected after %v, want about ping interval + timeout (300ms)", el)
	}
	fp.Blackhole(false)
	tg.accept()
}

// One target that stops reading does not hold up the others, and obmux's
// memory stays bounded while it is stuck (disconnect policy).
func TestPausedTargetDoesNotStallOthers(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	slow, fast := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_SLOW_URL="+slow.URL, "OBMUX_TARGET_FAST_URL="+fast.URL,
		"OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_QUEUE_SIZE=200", "OBMUX_PING_INTERVAL=0", "OBMUX_SHUTDOWN_TIMEOUT=300ms")
	up.connected()
	ps, pf := slow.accept(), fast.accept()
	ps.Pause()
	payload := strings.Repeat("p", 10000)
	const n = 3000
	var heap runtime.MemStats
	for i := 1; i <= n; i++ {
		up.send(sim.PrivateMessage(testSelfID, 1, int64(i), payload))
		if got := messageID(t, nextEvent(t, pf)); got != i {
			t.Fatalf("fast target got %d, want %d", got, i)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&heap)
	if heap.HeapAlloc > 200<<20 {
		t.Errorf("heap %d MiB after %d 10 KB events with a stuck target", heap.HeapAlloc>>20, n)
	}
	eventually(t, "the stuck target disconnected as a slow consumer", func() bool {
		return in.metric("obmux_disconnects_total", "name=slow", "reason=queue_overflow") >= 1
	})
	ps.Close()
}

// Bad input from a target: each gets a 1400 or a close, counted, and the
// connection or the process survives where it should.
func TestBadInputFromTargets(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_HEARTBEAT_INTERVAL=0",
		"OBMUX_MAX_MESSAGE_BYTES=4096")
	up.connected()
	p := tg.accept()
	cases := []string{
		"\xff\xfe not utf-8",
		`{"action":"x","echo":"\xff"}`,
		`{"action":"x","echo":1,"echo":2}`,
		`{"action":"x","params":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `,"echo":3}`,
	}
	for _, c := range cases {
		p.Send(ctxT(t), []byte(c))
		if r := next(t, p); !bytes.Contains(r, []byte(`"retcode":1400`)) && !bytes.Contains(r, []byte(`"retcode":1404`)) {
			t.Errorf("%.30q -> %s", c, r)
		}
	}
	// A binary frame is dropped and counted; the connection lives on.
	p.WS.Write(ctxT(t), websocket.MessageBinary, []byte(`{"action":"get_status","echo":"bin"}`))
	p.Send(ctxT(t), []byte(`{"action":"get_status","echo":"after"}`))
	if r := next(t, p); !bytes.Contains(r, []byte(`"echo":"after"`)) {
		t.Errorf("after a binary frame: %s", r)
	}
	if got := in.metric("obmux_dropped_frames_total", "name=a", "reason=invalid"); got < 4 {
		t.Errorf("invalid drops = %v", got)
	}
	// An oversized frame closes that connection with 1009; obmux redials.
	p.Send(ctxT(t), []byte(`{"action":"x","params":"`+strings.Repeat("a", 5000)+`"}`))
	<-p.Done
	if p.CloseStatus() != websocket.StatusMessageTooBig {
		t.Errorf("oversized frame: closed with %v", p.Err)
	}
	tg.accept()
	if got := in.metric("obmux_dropped_frames_total", "name=a", "reason=oversized"); got != 1 {
		t.Errorf("oversized drops = %v", got)
	}
}

// A response with an unknown echo is dropped and counted; a target that
// floods API calls does not starve another's.
func TestUnknownEchoAndAPIFlood(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	flood, calm := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_FLOOD_URL="+flood.URL, "OBMUX_TARGET_CALM_URL="+calm.URL,
		"OBMUX_HEARTBEAT_INTERVAL=0")
	u := up.connected()
	pf, pc := flood.accept(), calm.accept()
	u.Send(ctxT(t), []byte(`{"status":"ok","retcode":0,"data":null,"echo":"obmux:999999"}`))
	u.Send(ctxT(t), []byte(`{"status":"ok","retcode":0,"data":null,"echo":"foreign"}`))
	eventually(t, "unknown responses counted", func() bool {
		return in.metric("obmux_dropped_frames_total", "name=upstream", "reason=target_gone") == 2
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if pf.Send(ctx, fmt.Appendf(nil, `{"action":"get_status","echo":%d}`, i)) != nil {
				return
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-pf.Frames:
			}
		}
	})
	for i := range 20 {
		pc.Send(ctxT(t), fmt.Appendf(nil, `{"action":"get_status","echo":"calm%d"}`, i))
		if r := nextEvent(t, pc); !bytes.Contains(r, fmt.Appendf(nil, `"echo":"calm%d"`, i)) || !bytes.Contains(r, []byte(`"retcode":0`)) {
			t.Fatalf("calm call %d: %s", i, r)
		}
	}
	cancel()
	wg.Wait()
}

// The upstream's link is cut in the middle of a 64 KiB event: obmux sees a
// truncated frame, counts the disconnect, redials, and the targets get no
// part of the broken event, only the events before and after it, in order.
func TestUpstreamCutMidFrame(t *testing.T) {
	up, fp, in, pa := upstreamThroughProxy(t, "OBMUX_RECONNECT_MIN=10ms", "OBMUX_RECONNECT_MAX=50ms")
	up.send(event(1))
	if got := messageID(t, nextEvent(t, pa)); got != 1 {
		t.Fatalf("got event %d, want 1", got)
	}
	cut := fp.CutMidFrame(true, 16<<10)
	big := sim.PrivateMessage(testSelfID, 20002, 2, strings.Repeat("x", 64<<10))
	up.send(big)
	select {
	case <-cut:
	case <-ctxT(t).Done():
		t.Fatal("the proxy never cut the big event")
	}
	up.connected()
	eventually(t, "the upstream back up", func() bool { return in.metric("obmux_connection_up", "role=upstream") == 1 })
	if got := in.metric("obmux_disconnects_total", "role=upstream"); got != 1 {
		t.Errorf("upstream disconnects counted: %v, want 1", got)
	}
	up.send(event(3))
	if got := messageID(t, nextEvent(t, pa)); got != 3 {
		t.Fatalf("after the cut the target got event %d, want 3 (event 2 was never whole)", got)
	}
	if got := in.metric("obmux_connects_total", "role=target"); got != 1 {
		t.Errorf("the target was reconnected (%v connects): an upstream fault must not touch it", got)
	}
}

// A slow link (every chunk held 150 ms each way) keeps the upstream
// connection: keepalive waits for the pong instead of giving up, and the
// ping round trip it reports is the link's.
func TestDelayedLinkKeepsConnection(t *testing.T) {
	up, fp, in, pa := upstreamThroughProxy(t, "OBMUX_PING_INTERVAL=50ms", "OBMUX_PING_TIMEOUT=1s")
	const delay = 150 * time.Millisecond
	fp.Delay(delay)
	eventually(t, "a ping round trip over the slow link", func() bool {
		return in.metric("obmux_ping_rtt_seconds", "role=upstream") >= 2*delay.Seconds()
	})
	up.send(event(1))
	if got := messageID(t, nextEvent(t, pa)); got != 1 {
		t.Fatalf("got event %d, want 1", got)
	}
	if got := in.metric("obmux_disconnects_total", "role=upstream"); got != 0 {
		t.Errorf("the slow upstream was disconnected %v times", got)
	}
	fp.Delay(0)
}

// upstreamThroughProxy runs obmux (with env, heartbeats off) dialing the
// upstream through a fault proxy, with one target, and waits until both are
// connected.
func upstreamThroughProxy(t *testing.T, env ...string) (*upstream, *sim.FaultProxy, *instance, *sim.Peer) {
	t.Helper()
	up := newUpstream(t, "127.0.0.1:0")
	fp := faultProxy(t, up.Addr)
	a := newTarget(t)
	in := start(t, append([]string{"OBMUX_UPSTREAM_URL=ws://" + fp.Addr + "/", "OBMUX_TARGET_A_URL=" + a.URL,
		"OBMUX_HEARTBEAT_INTERVAL=0"}, env...)...)
	up.connected()
	return up, fp, in, a.accept()
}

// A target at its in-flight limit has its reader paused (backpressure): its
// pongs go unread meanwhile, which must not be taken for a dead peer.
func TestBackpressureIsNotAKeepaliveTimeout(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	up.silent.Store(true)
	a := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_SELF_ID=10001",
		"OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_API_MAX_INFLIGHT=2", "OBMUX_API_TIMEOUT=1s",
		"OBMUX_PING_INTERVAL=50ms", "OBMUX_PING_TIMEOUT=100ms")
	up.connected()
	p := a.accept()
	eventually(t, "upstream up", func() bool { return in.metric("obmux_connection_up", "role=upstream") == 1 })
	for i := range 3 {
		p.Send(ctxT(t), fmt.Appendf(nil, `{"action":"send_msg","echo":%d}`, i))
	}
	// Calls 0 and 1 time out after 1 s (10 ping timeouts); only then is
	// call 2 read and sent.
	for range 2 {
		if r := nextEvent(t, p); !bytes.Contains(r, []byte(`"retcode":1504`)) {
			t.Fatalf("want 1504, got %s", r)
		}
	}
	ctx := ctxT(t)
	for sent := 0; sent < 3; {
		select {
		case req := <-up.requests:
			if bytes.Contains(req, []byte(`"send_msg"`)) {
				sent++
			}
		case <-ctx.Done():
			t.Fatalf("the upstream got %d of the 3 calls", sent)
		}
	}
	if got := in.metric("obmux_disconnects_total", "name=a"); got != 0 {
		t.Fatalf("the held target was disconnected %v times", got)
	}
}
