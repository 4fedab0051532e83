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
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/internal/sim"
)

// Tests of the forward-WS server (OBMUX_FORWARD_LISTEN): real clients on
// 127.0.0.1 dial obmux as a framework would dial a OneBot implementation.

// fwdFrame is what the forward tests read out of a frame.
type fwdFrame struct {
	PostType      string          `json:"post_type"`
	MetaEventType string          `json:"meta_event_type"`
	SubType       string          `json:"sub_type"`
	SelfID        int64           `json:"self_id"`
	Interval      int64           `json:"interval"`
	Status        json.RawMessage `json:"status"`
	Retcode       *int            `json:"retcode"`
	Echo          json.RawMessage `json:"echo"`
	Data          json.RawMessage `json:"data"`
	Message       json.RawMessage `json:"message"` // a string in responses, an array in events
}

func parseFwd(t *testing.T, b []byte) fwdFrame {
	t.Helper()
	var f fwdFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame is not JSON: %s: %v", b, err)
	}
	return f
}

// kind names a frame for the forward tests: "lifecycle:<sub_type>",
// "heartbeat", "event" or "response".
func (f fwdFrame) kind() string {
	switch {
	case f.PostType == "meta_event" && f.MetaEventType == "lifecycle":
		return "lifecycle:" + f.SubType
	case f.PostType == "meta_event" && f.MetaEventType == "heartbeat":
		return "heartbeat"
	case f.PostType != "":
		return "event"
	case f.Retcode != nil:
		return "response"
	}
	return "unknown"
}

// fwdClient is one forward-WS client and everything it has received.
type fwdClient struct {
	t      *testing.T
	path   string
	p      *sim.Peer
	dialed time.Time // just before the dial: no timer of obmux's started earlier
	frames [][]byte
	ended  time.Time // when the connection was seen closed
}

// startForward starts obmux dialing up, with a forward-WS server on a free
// port, and waits until the self_id is known (before that obmux answers
// forward clients 503).
func startForward(t *testing.T, up *upstream, env ...string) *instance {
	t.Helper()
	in := start(t, append([]string{"OBMUX_UPSTREAM_URL=" + up.URL, "OBMUX_FORWARD_LISTEN=127.0.0.1:0"}, env...)...)
	up.connected()
	eventually(t, "obmux ready", func() bool { code, _ := in.get("/readyz"); return code == http.StatusOK })
	return in
}

// dialForward connects a client to path (with its query) and checks that its
// first frame is lifecycle connect with the upstream's self_id.
func dialForward(t *testing.T, in *instance, path string, h http.Header) *fwdClient {
	t.Helper()
	c := &fwdClient{t: t, path: path, dialed: time.Now()}
	p, _, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Forward+path, h)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(p.Close)
	c.p = p
	first := c.next()
	if f := parseFwd(t, first); f.kind() != "lifecycle:connect" || f.SelfID != testSelfID {
		t.Fatalf("%s: first frame is not lifecycle connect for %d: %s", path, testSelfID, first)
	}
	return c
}

// next returns the client's next frame and records it.
func (c *fwdClient) next() []byte {
	c.t.Helper()
	b := next(c.t, c.p)
	c.frames = append(c.frames, b)
	return b
}

// until reads frames until one of kind arrives, and returns it.
func (c *fwdClient) until(kind string) []byte {
	c.t.Helper()
	for {
		if b := c.next(); parseFwd(c.t, b).kind() == kind {
			return b
		}
	}
}

// call sends req and returns the next response frame.
func (c *fwdClient) call(req string) fwdFrame {
	c.t.Helper()
	if err := c.p.Send(ctxT(c.t), []byte(req)); err != nil {
		c.t.Fatalf("%s: send: %v", c.path, err)
	}
	return parseFwd(c.t, c.until("response"))
}

// drain reads every frame until the connection ends.
func (c *fwdClient) drain() {
	c.t.Helper()
	ctx := ctxT(c.t)
	for {
		select {
		case b, ok := <-c.p.Frames:
			if !ok {
				c.ended = time.Now()
				return
			}
			c.frames = append(c.frames, b)
		case <-ctx.Done():
			c.t.Fatalf("%s: the connection did not end", c.path)
		}
	}
}

// count returns how many recorded frames are of kind.
func (c *fwdClient) count(kind string) int {
	n := 0
	for _, b := range c.frames {
		if parseFwd(c.t, b).kind() == kind {
			n++
		}
	}
	return n
}

// checkClosedForShutdown checks that the client's last frame was lifecycle
// disable for the self_id, followed by close 1001 "obmux shutting down".
func (c *fwdClient) checkClosedForShutdown() {
	c.t.Helper()
	if len(c.frames) == 0 {
		c.t.Errorf("%s: no frames", c.path)
		return
	}
	last := c.frames[len(c.frames)-1]
	if f := parseFwd(c.t, last); f.kind() != "lifecycle:disable" || f.SelfID != testSelfID {
		c.t.Errorf("%s: last frame before the close is not lifecycle disable: %s", c.path, last)
	}
	if c.p.CloseStatus() != websocket.StatusGoingAway || !strings.Contains(fmt.Sprint(c.p.Err), "obmux shutting down") {
		c.t.Errorf("%s: closed with %v, want 1001 \"obmux shutting down\"", c.path, c.p.Err)
	}
}

// Five clients at once on /, /event, /api and the trailing-slash spellings:
// each gets lifecycle connect first, its own heartbeats at the interval
// (never doubled, /api included), exactly the events its endpoint serves,
// answers to its API calls (or 1400 where the endpoint takes none), and on
// shutdown lifecycle disable and close 1001. What each received is checked
// frame by frame once obmux has closed them all, so that nothing extra can
// hide.
func TestForwardEndpointsServeWhatTheyShould(t *testing.T) {
	const hbEvery = 100 * time.Millisecond
	up := newUpstream(t, "127.0.0.1:0")
	in := startForward(t, up, "OBMUX_HEARTBEAT_INTERVAL=100ms")
	paths := []string{"/", "/event", "/api", "/event/", "/api/"}
	events := map[string]bool{"/": true, "/event": true, "/event/": true}
	clients := map[string]*fwdClient{}
	for _, path := range paths {
		clients[path] = dialForward(t, in, path, nil)
	}
	eventually(t, "five clients counted up", func() bool {
		return in.metric("obmux_connection_up", "role=client") == 5 && in.metric("obmux_connection_up", "role=client", "name=/event") == 2
	})

	const n = 20
	var sent [][]byte // event(i) holds the time: keep what was sent
	for i := 1; i <= n; i++ {
		sent = append(sent, event(i))
		up.send(sent[i-1])
	}
	for _, path := range paths {
		if events[path] {
			for clients[path].count("event") < n {
				clients[path].next()
			}
		}
	}

	// API calls where the endpoint takes them, 1400 where it does not.
	for _, path := range []string{"/", "/api", "/api/"} {
		r := clients[path].call(`{"action":"get_status","params":{},"echo":"s` + path + `"}`)
		if string(r.Status) != `"ok"` || *r.Retcode != 0 || string(r.Echo) != `"s`+path+`"` {
			t.Errorf("%s: get_status answered %+v", path, r)
		}
	}
	for _, path := range []string{"/event", "/event/"} {
		r := clients[path].call(`{"action":"get_status","params":{},"echo":{"seq":7}}`)
		if *r.Retcode != 1400 || string(r.Status) != `"failed"` || string(r.Echo) != `{"seq":7}` || !bytes.Contains(r.Message, []byte("events only")) {
			t.Errorf("%s: an API call on an events-only endpoint was answered %+v", path, r)
		}
	}
	for _, path := range []string{"/api", "/api/"} {
		r := clients[path].call(string(event(n + 1)))
		if *r.Retcode != 1400 || string(r.Status) != `"failed"` || r.Echo != nil || !bytes.Contains(r.Message, []byte("not an API request")) {
			t.Errorf("%s: an event frame on an API-only endpoint was answered %+v", path, r)
		}
		r = clients[path].call(`{"time":1,"self_id":10001,"post_type":"notice","notice_type":"x","echo":"ev"}`)
		if *r.Retcode != 1400 || string(r.Echo) != `"ev"` {
			t.Errorf("%s: an event frame with an echo was answered %+v", path, r)
		}
	}
	if got := in.metric("obmux_frames_total", "role=client", "name=/event", "direction=in", "kind=api_request"); got != 2 {
		t.Errorf("api_request frames read on /event = %v, want 2", got)
	}
	if got := in.metric("obmux_dropped_frames_total", "name=/api", "reason=invalid"); got != 4 {
		t.Errorf("invalid frames dropped on /api = %v, want 4", got)
	}

	// Heartbeats on every endpoint at the interval. The timers start after
	// the dial began, so k heartbeats cannot arrive sooner than k intervals
	// after it; doubled timers would make it in half that.
	const k = 4
	for _, path := range paths {
		c := clients[path]
		for c.count("heartbeat") < k {
			c.until("heartbeat")
		}
		el := time.Since(c.dialed)
		if el < k*hbEvery*9/10 {
			t.Errorf("%s: %d heartbeats %v after connecting: more than one per %v", path, k, el, hbEvery)
		}
		if el > k*hbEvery+3*time.Second {
			t.Errorf("%s: %d heartbeats took %v: heartbeats missing", path, k, el)
		}
	}

	in.stop()
	for _, path := range paths {
		c := clients[path]
		c.drain()
		c.checkClosedForShutdown()
		var got []int
		hbs, responses := 0, 0
		for _, b := range c.frames {
			switch f := parseFwd(t, b); f.kind() {
			case "event":
				var e struct {
					MessageID int `json:"message_id"`
				}
				json.Unmarshal(b, &e)
				got = append(got, e.MessageID)
				if e.MessageID < 1 || e.MessageID > n || !bytes.Equal(b, sent[e.MessageID-1]) {
					t.Errorf("%s: unexpected event %s", path, b)
				}
			case "heartbeat":
				hbs++
				if f.SelfID != testSelfID || f.Interval != hbEvery.Milliseconds() || !bytes.Contains(f.Status, []byte(`"online":true`)) {
					t.Errorf("%s: bad heartbeat %s", path, b)
				}
			case "response":
				responses++
			case "lifecycle:connect", "lifecycle:disable":
			default:
				t.Errorf("%s: unexpected frame %s", path, b)
			}
		}
		if n := c.count("lifecycle:connect") + c.count("lifecycle:disable"); n != 2 {
			t.Errorf("%s: %d lifecycle frames, want connect and disable once each", path, n)
		}
		want := []int(nil)
		if events[path] {
			for i := 1; i <= n; i++ {
				want = append(want, i)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s received events %v, want %v", path, got, want)
		}
		wantResponses := map[string]int{"/": 1, "/event": 1, "/event/": 1, "/api": 3, "/api/": 3}[path]
		if responses != wantResponses {
			t.Errorf("%s: %d responses, want %d", path, responses, wantResponses)
		}
		// One timer per connection: no more heartbeats than intervals lived.
		if limit := int(c.ended.Sub(c.dialed)/hbEvery) + 1; hbs > limit {
			t.Errorf("%s: %d heartbeats in %v: more than one per %v", path, hbs, c.ended.Sub(c.dialed), hbEvery)
		}
	}
}

// OBMUX_FORWARD_API_HEARTBEAT=false: no heartbeats on /api, still on / and
// /event.
func TestForwardAPIHeartbeatOff(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	in := startForward(t, up, "OBMUX_HEARTBEAT_INTERVAL=50ms", "OBMUX_FORWARD_API_HEARTBEAT=false")
	api, apiSlash := dialForward(t, in, "/api", nil), dialForward(t, in, "/api/", nil)
	uni, ev := dialForward(t, in, "/", nil), dialForward(t, in, "/event", nil)
	// The /api clients connected first: by the time the others have had 5
	// heartbeats, an /api timer would have fired at least as often.
	for _, c := range []*fwdClient{uni, ev} {
		for c.count("heartbeat") < 5 {
			c.until("heartbeat")
		}
	}
	if r := api.call(`{"action":"get_status","echo":1}`); *r.Retcode != 0 {
		t.Errorf("get_status on /api: %+v", r)
	}
	in.stop()
	for _, c := range []*fwdClient{api, apiSlash} {
		c.drain()
		c.checkClosedForShutdown()
		if n := c.count("heartbeat"); n != 0 {
			t.Errorf("%s: %d heartbeats with OBMUX_FORWARD_API_HEARTBEAT=false", c.path, n)
		}
	}
}

// With OBMUX_FORWARD_TOKEN, every endpoint refuses before the upgrade: 401
// without a token, 403 with a wrong one (Bearer header or access_token
// query); the right one in either place connects. Refusals are not counted
// as connects.
func TestForwardTokenRefusedBeforeUpgrade(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	in := startForward(t, up, "OBMUX_FORWARD_TOKEN=s3cret")
	bearerH := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	paths := []string{"/", "/event", "/api", "/event/", "/api/"}
	for _, path := range paths {
		for _, c := range []struct {
			name  string
			query string
			h     http.Header
			code  int
		}{
			{"no token", "", nil, http.StatusUnauthorized},
			{"wrong Bearer", "", bearerH("wrong"), http.StatusForbidden},
			{"wrong access_token", "?access_token=wrong", nil, http.StatusForbidden},
			{"empty access_token", "?access_token=", nil, http.StatusForbidden},
			{"wrong Bearer, right access_token", "?access_token=s3cret", bearerH("wrong"), http.StatusForbidden},
		} {
			p, resp, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Forward+path+c.query, c.h)
			if err == nil {
				p.Close()
				t.Errorf("%s, %s: upgraded, want HTTP %d", path, c.name, c.code)
				continue
			}
			if resp == nil || resp.StatusCode != c.code {
				t.Errorf("%s, %s: want HTTP %d before the upgrade, got %v (%v)", path, c.name, c.code, resp, err)
			}
		}
		dialForward(t, in, path, bearerH("s3cret"))
		dialForward(t, in, path+"?access_token=s3cret", nil)
	}
	if got := in.metric("obmux_connects_total", "role=client"); got != float64(2*len(paths)) {
		t.Errorf("client connects = %v, want %d", got, 2*len(paths))
	}
	// Not an endpoint: 404, token or not.
	_, resp, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Forward+"/onebot/v11/ws", bearerH("s3cret"))
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path: want 404, got %v %v", resp, err)
	}
}

// A reverse-WS target and two forward clients call the API with the very same
// echoes (NoneBot counts from 1 everywhere); the upstream answers in reverse
// order; each caller gets exactly its own answers, echo restored.
func TestForwardClientAndTargetEchoIsolation(t *testing.T) {
	const k = 10
	const callers = 3
	up := newUpstream(t, "127.0.0.1:0")
	var held [][]byte
	up.custom = func(p *sim.Peer, req []byte) bool {
		var r sim.Request
		json.Unmarshal(req, &r)
		if r.Action != "whoami" {
			return false
		}
		held = append(held, req)
		if len(held) == k*callers {
			for i := len(held) - 1; i >= 0; i-- {
				var r sim.Request
				json.Unmarshal(held[i], &r)
				p.Send(context.Background(), sim.Response(`"ok"`, 0, string(r.Params), r.Echo))
			}
		}
		return true
	}
	tg := newTarget(t)
	in := startForward(t, up, "OBMUX_TARGET_A_URL="+tg.URL)
	pt := tg.accept()
	uni, api := dialForward(t, in, "/", nil), dialForward(t, in, "/api", nil)
	send := map[string]func([]byte) error{
		"target": func(b []byte) error { return pt.Send(context.Background(), b) },
		"/":      func(b []byte) error { return uni.p.Send(context.Background(), b) },
		"/api":   func(b []byte) error { return api.p.Send(context.Background(), b) },
	}
	echo := func(i int) string {
		if i%2 == 0 {
			return fmt.Sprintf(`"%d"`, i) // NoneBot: a decimal string
		}
		return fmt.Sprint(i) // Koishi: a number
	}
	var wg sync.WaitGroup
	for who, s := range send {
		wg.Go(func() {
			for i := 1; i <= k; i++ {
				if err := s([]byte(`{"action":"whoami","params":{"who":"` + who + `"},"echo":` + echo(i) + `}`)); err != nil {
					t.Errorf("%s: %v", who, err)
				}
			}
		})
	}
	wg.Wait()
	read := map[string]func() []byte{
		"target": func() []byte { return nextEvent(t, pt) },
		"/":      func() []byte { return uni.until("response") },
		"/api":   func() []byte { return api.until("response") },
	}
	for who, r := range read {
		got := map[string]int{}
		for range k {
			b := r()
			var resp struct {
				Data struct{ Who string } `json:"data"`
				Echo json.RawMessage      `json:"echo"`
			}
			if err := json.Unmarshal(b, &resp); err != nil || resp.Data.Who != who {
				t.Fatalf("%s got someone else's answer: %s", who, b)
			}
			got[string(resp.Echo)]++
		}
		for i := 1; i <= k; i++ {
			if got[echo(i)] != 1 {
				t.Errorf("%s: echo %s came back %d times (all: %v)", who, echo(i), got[echo(i)], got)
			}
		}
	}
	if got := in.metric("obmux_api_pending_requests"); got != 0 {
		t.Errorf("pending requests after every answer: %v", got)
	}
}

// Clients that go away while their call waits for the upstream (one cut off,
// one closing cleanly) leave no pending entry behind; the late answers are
// dropped as target_gone, and a new client's calls still work.
func TestForwardClientLeavingMidCallLeavesNoPending(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	held := make(chan sim.Request, 2)
	var hp *sim.Peer
	up.custom = func(p *sim.Peer, req []byte) bool {
		var r sim.Request
		json.Unmarshal(req, &r)
		if r.Action != "slow_call" {
			return false
		}
		hp = p
		held <- r
		return true
	}
	in := startForward(t, up)
	pending := func() float64 {
		t.Helper()
		mf := in.metrics()["obmux_api_pending_requests"]
		if mf == nil || len(mf.Metric) != 1 || mf.Metric[0].Gauge == nil {
			t.Fatalf("no gauge obmux_api_pending_requests in the scrape: %v", mf)
		}
		return mf.Metric[0].Gauge.GetValue()
	}
	// obmux's own get_login_info has been answered: nothing pending.
	eventually(t, "get_login_info answered", func() bool {
		return in.metric("obmux_api_requests_total", "name=upstream", "outcome=ok") == 1
	})
	if got := pending(); got != 0 {
		t.Fatalf("pending before any call: %v", got)
	}
	cut, clean := dialForward(t, in, "/", nil), dialForward(t, in, "/api", nil)
	for _, c := range []*fwdClient{cut, clean} {
		if err := c.p.Send(ctxT(t), []byte(`{"action":"slow_call","echo":"mine"}`)); err != nil {
			t.Fatal(err)
		}
	}
	var reqs []sim.Request
	for range 2 {
		select {
		case r := <-held:
			reqs = append(reqs, r)
		case <-ctxT(t).Done():
			t.Fatal("the calls did not reach the upstream")
		}
	}
	eventually(t, "two calls pending", func() bool { return pending() == 2 })

	cut.p.Close() // no close handshake
	eventually(t, "the cut-off client's call forgotten", func() bool { return pending() == 1 })
	clean.p.WS.Close(websocket.StatusNormalClosure, "bye")
	<-clean.p.Done
	eventually(t, "the cleanly closed client's call forgotten", func() bool { return pending() == 0 })
	eventually(t, "both clients down", func() bool { return in.metric("obmux_connection_up", "role=client") == 0 })

	before := in.metric("obmux_dropped_frames_total", "name=upstream", "reason=target_gone")
	for _, r := range reqs {
		hp.Send(context.Background(), sim.Response(`"ok"`, 0, "null", r.Echo))
	}
	eventually(t, "the late answers dropped", func() bool {
		return in.metric("obmux_dropped_frames_total", "name=upstream", "reason=target_gone") == before+2
	})

	c := dialForward(t, in, "/", nil)
	if r := c.call(`{"action":"get_status","echo":"mine"}`); *r.Retcode != 0 || string(r.Echo) != `"mine"` {
		t.Errorf("a new client's call: %+v", r)
	}
	if got := pending(); got != 0 {
		t.Errorf("pending at the end: %v", got)
	}
}

// On shutdown every client, on every endpoint, gets lifecycle disable and then
// close 1001, within the shutdown timeout; nothing else comes after connect
// on an idle connection.
func TestForwardShutdownSendsDisableThenClose(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	in := startForward(t, up, "OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_SHUTDOWN_TIMEOUT=3s")
	var clients []*fwdClient
	for _, path := range []string{"/", "/event", "/api", "/api/"} {
		clients = append(clients, dialForward(t, in, path, nil))
	}
	eventually(t, "clients up", func() bool { return in.metric("obmux_connection_up", "role=client") == 4 })
	if took := in.stop(); took > 3*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	for _, c := range clients {
		c.drain()
		c.checkClosedForShutdown()
		if len(c.frames) != 2 {
			t.Errorf("%s: frames %q, want connect then disable", c.path, c.frames)
		}
	}
}

// A client has its own bounded queue: one that stops reading is cut off
// (queue_overflow) while the other client and a target get every event, in
// order.
func TestForwardSlowClientIsCutOffAlone(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := startForward(t, up, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_QUEUE_SIZE=10", "OBMUX_WRITE_TIMEOUT=1s",
		"OBMUX_HEARTBEAT_INTERVAL=0")
	pt := tg.accept()
	slow, fast := dialForward(t, in, "/event", nil), dialForward(t, in, "/", nil)
	slow.p.Pause() // bites at the first event
	// Flood until obmux gives up on the stuck client: its queue_length
	// series goes when its cursor is dropped.
	sent := flood(t, up, []*sim.Peer{fast.p, pt}, func() bool { return len(in.series("obmux_queue_length", "name=/event")) == 0 })
	eventually(t, "the stuck client disconnected for queue_overflow", func() bool {
		return in.metric("obmux_disconnects_total", "role=client", "name=/event", "reason=queue_overflow") == 1
	})
	if got := in.metric("obmux_connection_up", "role=client", "name=/"); got != 1 {
		t.Errorf("the reading client is down: %v", got)
	}
	if got := in.metric("obmux_disconnects_total", "role=target", "name=a"); got != 0 {
		t.Errorf("the target was disconnected: %v", got)
	}
	t.Logf("cut off after %d events of 64 KiB", len(sent))
}

// flood sends 64 KiB events in batches of 5 until done reports true, and
// returns them. Every reader must read each batch, checked byte for byte,
// before the next is sent: only a peer that does not read falls behind, even
// with a queue of 10 on a slow machine.
func flood(t *testing.T, up *upstream, readers []*sim.Peer, done func() bool) [][]byte {
	t.Helper()
	big := strings.Repeat("f", 64<<10)
	var sent [][]byte
	for !done() {
		if len(sent) >= 2000 {
			t.Fatalf("still not done after %d events of 64 KiB", len(sent))
		}
		batch := len(sent)
		for range 5 {
			e := sim.PrivateMessage(testSelfID, 1, int64(len(sent)+1), big)
			sent = append(sent, e)
			up.send(e)
		}
		for ri, p := range readers {
			for i := batch; i < len(sent); i++ {
				if got := nextEvent(t, p); !bytes.Equal(got, sent[i]) {
					t.Fatalf("reader %d: event %d: %.200s", ri, i+1, got)
				}
			}
		}
	}
	return sent
}

// Clients get keepalive pings: the round trip is measured, and a client that
// stops answering is dropped for keepalive_timeout.
func TestForwardClientKeepalive(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	in := startForward(t, up, "OBMUX_PING_INTERVAL=50ms", "OBMUX_PING_TIMEOUT=200ms", "OBMUX_HEARTBEAT_INTERVAL=50ms")
	c := dialForward(t, in, "/api", nil)
	eventually(t, "a ping round trip on /api", func() bool {
		return in.metric("obmux_ping_rtt_seconds", "role=client", "name=/api") > 0
	})
	c.p.Pause() // bites at the next heartbeat
	eventually(t, "the silent client dropped", func() bool {
		return in.metric("obmux_disconnects_total", "role=client", "name=/api", "reason=keepalive_timeout") == 1
	})
	if got := in.metric("obmux_connection_up", "role=client", "name=/api"); got != 0 {
		t.Errorf("up = %v after the keepalive timeout", got)
	}
}

// When the upstream comes back as another account, a forward client is not
// left greeted with the old self_id: it gets lifecycle disable for the old
// one and a close, and a new connection is greeted with the new one.
func TestForwardSelfIDChangeClosesClients(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	addr := up.Addr
	in := startForward(t, up, "OBMUX_HEARTBEAT_INTERVAL=0")
	clients := []*fwdClient{dialForward(t, in, "/", nil), dialForward(t, in, "/event", nil), dialForward(t, in, "/api", nil)}
	up.Close()
	up2 := newUpstream(t, addr)
	up2.selfID.Store(30003)
	up2.connected()
	for _, c := range clients {
		c.drain()
		last := c.frames[len(c.frames)-1]
		if f := parseFwd(t, last); f.kind() != "lifecycle:disable" || f.SelfID != testSelfID {
			t.Errorf("%s: last frame before the close: %s", c.path, last)
		}
		if c.p.CloseStatus() != websocket.StatusNormalClosure {
			t.Errorf("%s: closed with %v, want 1000", c.path, c.p.Err)
		}
	}
	var p *sim.Peer
	eventually(t, "a client greeted with the new self_id", func() bool {
		var err error
		p, _, err = sim.Dial(ctxT(t), "ws://"+in.addrs.Forward+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		f := parseFwd(t, next(t, p))
		if f.kind() == "lifecycle:connect" && f.SelfID == 30003 {
			return true
		}
		p.Close()
		return false
	})
	p.Close()
}

// A web page on another origin cannot open the forward server (a browser
// sends its Origin); a bot, which sends none, can.
func TestForwardRefusesCrossOriginBrowsers(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	in := startForward(t, up)
	_, resp, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Forward+"/", http.Header{"Origin": {"http://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin: want HTTP 403, got %v %v", resp, err)
	}
	c := dialForward(t, in, "/", nil)
	c.p.Close()
}
