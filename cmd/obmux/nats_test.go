package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/obmux/obmux/internal/natstest"
	"github.com/obmux/obmux/internal/sim"
)

// The account side: every upstream event reaches the WebSocket target and
// the stream (meta events only the target), the account's status is
// published, an API call over NATS is answered with its echo intact, and
// while NATS is down the target loses nothing and NATS gets it all later.
func TestNATSAccountSide(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.Start(t, dir, 0)
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_BOT_URL="+tg.URL, "OBMUX_NATS_URL="+ns.URL(),
		"OBMUX_NATS_API_DENY=set_group_kick", "OBMUX_NATS_CALLER_EDGE_1_API_ALLOW=get_*")
	up.connected()
	p := tg.accept()
	eventually(t, "the stream exists", func() bool { return in.metric("obmux_nats_connected") == 1 })

	const n = 50
	sent := make([][]byte, 2*n+1)
	for i := 1; i <= n; i++ {
		sent[i] = event(i)
		up.send(sent[i])
	}
	up.send([]byte(`{"time":1,"self_id":10001,"post_type":"meta_event","meta_event_type":"heartbeat","status":{"online":true,"good":true},"interval":30000}`))
	for i := 1; i <= n; i++ {
		if got := nextEvent(t, p); !bytes.Equal(got, sent[i]) {
			t.Fatalf("target event %d: %s", i, got)
		}
	}
	msgs := ns.Messages(t, "ONEBOT", 1, n+1)
	events := 0
	for _, m := range msgs {
		switch m.Subject() {
		case "onebot.10001.status":
			var st struct {
				SelfID int64 `json:"self_id"`
				Online bool  `json:"online"`
			}
			if err := json.Unmarshal(m.Data(), &st); err != nil || st.SelfID != testSelfID || !st.Online {
				t.Errorf("status %s", m.Data())
			}
		case "onebot.10001.event.message.private":
			events++
			if !bytes.Equal(m.Data(), sent[events]) {
				t.Fatalf("stream event %d: %s", events, m.Data())
			}
		default:
			t.Errorf("unexpected subject %s: %s", m.Subject(), m.Data())
		}
	}

	// An API call over NATS request/reply.
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reply, err := nc.Request("onebot.10001.api", []byte(`{"action":"get_login_info","params":{},"echo":{"caller":"edge","n":[1,2]}}`), wait)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Status string          `json:"status"`
		Echo   json.RawMessage `json:"echo"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil || resp.Status != "ok" || string(resp.Echo) != `{"caller":"edge","n":[1,2]}` {
		t.Fatalf("API reply over NATS: %s", reply.Data)
	}
	reply, err = nc.Request("onebot.10001.api", []byte(`{"action":"set_group_kick_async","params":{},"echo":"k"}`), wait)
	if err != nil || !bytes.Contains(reply.Data, []byte(`"retcode":1403`)) || !bytes.Contains(reply.Data, []byte(`"echo":"k"`)) {
		t.Fatalf("a call OBMUX_NATS_API_DENY refuses: %s, %v", reply.Data, err)
	}
	if v := in.metric("obmux_api_requests_total", "name=nats", "outcome=forbidden"); v != 1 {
		t.Errorf("obmux_api_requests_total{name=nats,outcome=forbidden} = %v, want 1", v)
	}
	// A named caller (an edge sends its consumer name) has its own policy.
	named := nats.NewMsg("onebot.10001.api")
	named.Header.Set("Obmux-Caller", "edge-1")
	named.Data = []byte(`{"action":"send_msg","params":{"user_id":1,"message":"hi"},"echo":"n"}`)
	reply, err = nc.RequestMsg(named, wait)
	if err != nil || !bytes.Contains(reply.Data, []byte(`"retcode":1403`)) {
		t.Fatalf("send_msg from edge-1 (OBMUX_NATS_CALLER_EDGE_1_API_ALLOW=get_*): %s, %v", reply.Data, err)
	}
	if v := in.metric("obmux_api_requests_total", "name=nats:edge_1", "outcome=forbidden"); v != 1 {
		t.Errorf("obmux_api_requests_total{name=nats:edge_1,outcome=forbidden} = %v, want 1", v)
	}
	reply, err = nc.Request("onebot.10001.api", named.Data, wait)
	if err != nil || !bytes.Contains(reply.Data, []byte(`"status":"ok"`)) {
		t.Fatalf("the same send_msg from an unnamed caller: %s, %v", reply.Data, err)
	}
	reply, err = nc.Request("onebot.10001.api", []byte(`{"echo":"x"}`), wait)
	if err != nil || !bytes.Contains(reply.Data, []byte(`"retcode":1400`)) || !bytes.Contains(reply.Data, []byte(`"echo":"x"`)) {
		t.Fatalf("a frame without action over NATS: %s, %v", reply.Data, err)
	}

	// NATS down: the target gets every event at once; the stream later.
	ns.Stop()
	eventually(t, "obmux sees NATS gone", func() bool { return in.metric("obmux_nats_connected") == 0 })
	for i := n + 1; i <= 2*n; i++ {
		sent[i] = event(i)
		up.send(sent[i])
	}
	for i := n + 1; i <= 2*n; i++ {
		if got := nextEvent(t, p); !bytes.Equal(got, sent[i]) {
			t.Fatalf("target event %d while NATS is down: %s", i, got)
		}
	}
	if got := in.metric("obmux_nats_buffer_events"); got != n {
		t.Errorf("obmux_nats_buffer_events = %v while NATS is down, want %d", got, n)
	}
	ns = natstest.Start(t, dir, ns.Port())
	later := ns.Messages(t, "ONEBOT", uint64(len(msgs)+1), n)
	for i, m := range later {
		if !bytes.Equal(m.Data(), sent[n+1+i]) {
			t.Fatalf("stream event %d after the restart: %s", n+1+i, m.Data())
		}
	}
	eventually(t, "the buffer is empty", func() bool { return in.metric("obmux_nats_buffer_events") == 0 })
	if got := in.metric("obmux_nats_dropped_total"); got != 0 {
		t.Errorf("obmux_nats_dropped_total = %v", got)
	}
	// Shutdown publishes what came last: the account is offline now.
	in.stop()
	last := ns.Messages(t, "ONEBOT", uint64(len(msgs)+n+1), 1)[0]
	if last.Subject() != "onebot.10001.status" || !bytes.Contains(last.Data(), []byte(`"online":false`)) {
		t.Errorf("last message %s: %s, want the offline status", last.Subject(), last.Data())
	}
}

// edgeEnv is the configuration of an edge serving testSelfID from ns.
func edgeEnv(ns *natstest.Server, consumer string, targets ...*target) []string {
	env := []string{"OBMUX_UPSTREAM_URL=" + ns.URL(), "OBMUX_SELF_ID=10001", "OBMUX_NATS_CONSUMER=" + consumer}
	for i, tg := range targets {
		env = append(env, fmt.Sprintf("OBMUX_TARGET_%c_URL=%s", 'A'+i, tg.URL))
	}
	return env
}

// Two edges, each with two targets, behind one account side: every target
// gets every event in order; an edge target's API call goes over NATS to
// the account side and back with its echo; with no account side it is
// answered 1502 at once.
func TestNATSEdges(t *testing.T) {
	ns, up, acct := accountSide(t)
	eventually(t, "the account side publishes", func() bool { return acct.metric("obmux_nats_published_total") >= 1 })

	var peers []*sim.Peer
	var edges []*instance
	for e := range 2 {
		tgs := []*target{newTarget(t), newTarget(t)}
		edge := start(t, edgeEnv(ns, fmt.Sprintf("edge%d", e), tgs...)...)
		edges = append(edges, edge)
		for _, tg := range tgs {
			peers = append(peers, tg.accept())
		}
		consuming(t, edge)
	}
	const n = 100
	sent := make([][]byte, n)
	for i := range sent {
		sent[i] = event(i)
		up.send(sent[i])
	}
	for pi, p := range peers {
		for i := range sent {
			if got := nextEvent(t, p); !bytes.Equal(got, sent[i]) {
				t.Fatalf("edge target %d, event %d: %s", pi, i, got)
			}
		}
	}

	// The NATS server restarts mid-stream: the account side keeps what it
	// could not publish, the edges resume; every target gets every event.
	ns.Stop()
	more := make([][]byte, n)
	for i := range more {
		more[i] = event(n + i)
		up.send(more[i])
		if i == n/2 {
			ns = natstest.Start(t, ns.Dir(), ns.Port())
		}
	}
	for pi, p := range peers {
		for i := range more {
			if got := nextEvent(t, p); !bytes.Equal(got, more[i]) {
				t.Fatalf("edge target %d, event %d after the NATS restart: %s", pi, n+i, got)
			}
		}
	}

	call := func(p *sim.Peer, echo string) []byte {
		t.Helper()
		if err := p.Send(ctxT(t), []byte(`{"action":"get_login_info","params":{},"echo":`+echo+`}`)); err != nil {
			t.Fatal(err)
		}
		for {
			b := nextEvent(t, p)
			if bytes.Contains(b, []byte(`"retcode"`)) {
				return b
			}
		}
	}
	for pi, p := range peers {
		echo := fmt.Sprintf(`{"edge_target":%d}`, pi)
		got := call(p, echo)
		if !bytes.Contains(got, []byte(`"status":"ok"`)) || !bytes.Contains(got, []byte(`"echo":`+echo)) {
			t.Errorf("edge target %d: API answer %s", pi, got)
		}
	}

	acct.stop()
	got := call(peers[0], `"late"`)
	if !bytes.Contains(got, []byte(`"retcode":1502`)) || !bytes.Contains(got, []byte(`"echo":"late"`)) {
		t.Errorf("with no account side: %s, want 1502 with the echo", got)
	}
	if v := edges[0].metric("obmux_api_requests_total", "outcome=upstream_down"); v != 1 {
		t.Errorf("edge's obmux_api_requests_total{outcome=upstream_down} = %v, want 1", v)
	}
}

// An edge killed with SIGKILL mid-stream and started again gives its target
// every event published meanwhile, in order. At the kill the target is
// paused with events queued for it in the edge (written to nobody yet):
// they must come again, as must what JetStream had not been told was
// written; what the target had is repeated at most (measured and logged).
func TestNATSEdgeSIGKILL(t *testing.T) {
	ns, up, _ := accountSide(t)
	tg := newTarget(t)
	edge := startChild(t, edgeEnv(ns, "killed", tg)...)
	p := tg.accept()
	consuming(t, edge)

	// 64 KiB events: what a paused target leaves queued does not all fit
	// in the sockets' buffers, and stays within OBMUX_QUEUE_BYTES.
	text := strings.Repeat("x", 64<<10)
	ev := func(n int) []byte { return sim.PrivateMessage(testSelfID, 20002, int64(n), text) }
	const before, during = 200, 50
	last := -1
	read := func(b []byte) {
		if bytes.Contains(b, []byte(`"post_type":"message"`)) {
			if n := messageID(t, b); n != last+1 {
				t.Fatalf("first run: event %d after %d", n, last)
			}
			last++
		}
	}
	for i := range before {
		up.send(ev(i))
		if i == 20 {
			for last < 10 {
				read(nextEvent(t, p))
			}
			p.Pause()
		}
	}
	eventually(t, "events queued in the edge for the paused target", func() bool {
		return edge.metric("obmux_queue_length", "name=a") >= 50
	})
	// JetStream has been told what was written: the ack floor reaches the
	// events the target's socket took (once, at least, after the pause).
	eventually(t, "an acknowledgement after the pause", func() bool { return ns.AckFloor(t, "ONEBOT", "killed") > uint64(last+1) })
	edge.kill()
	p.Resume()
	for { // what reached the target before the kill counts as received
		b, err := p.Next(ctxT(t))
		if err != nil {
			break
		}
		read(b)
	}
	for i := before; i < before+during; i++ {
		up.send(ev(i))
	}
	startChild(t, edgeEnv(ns, "killed", tg)...)
	p = tg.accept()
	first, n := -1, -1
	for n < before+during-1 {
		b := nextEvent(t, p)
		if !bytes.Contains(b, []byte(`"post_type":"message"`)) {
			continue
		}
		got := messageID(t, b)
		switch {
		case first < 0:
			first = got
			if first > last+1 {
				t.Fatalf("after the restart the target got event %d first; it had %d: %d lost", first, last, first-last-1)
			}
		case got != n+1:
			t.Fatalf("after the restart: event %d after %d", got, n)
		}
		n = got
	}
	t.Logf("SIGKILL after the target had event %d of %d (the rest queued in the edge): the restarted edge began at %d: %d repeated, none lost",
		last, before, first, last+1-first)
}

// obmux doctor on an edge and on an account side that publishes: a line for
// NATS each, the stream and the consumer in the user's terms.
func TestDoctorNATS(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), 0)
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	var out bytes.Buffer
	err := run(ctxT(t), []string{"doctor"}, []string{"OBMUX_UPSTREAM_URL=" + up.URL, "OBMUX_NATS_URL=" + ns.URL(),
		"OBMUX_METRICS_LISTEN=127.0.0.1:0", "OBMUX_TARGET_A_URL=" + tg.URL}, &out, &out)
	if code := exitCode(err, &bytes.Buffer{}); code != 0 {
		t.Fatalf("account side: exit %d (%v):\n%s", code, err, out.String())
	}
	if l := doctorLine(t, out.String(), "NATS"); !strings.Contains(l, "OK") || !strings.Contains(l, "stream ONEBOT does not exist yet; obmux creates it") {
		t.Errorf("account side: %s", l)
	}

	out.Reset()
	env := append(edgeEnv(ns, "doc", tg), "OBMUX_METRICS_LISTEN=127.0.0.1:0")
	err = run(ctxT(t), []string{"doctor"}, env, &out, &out)
	if code := exitCode(err, &bytes.Buffer{}); code != 1 {
		t.Errorf("edge before the account side ran: exit %d (%v), want 1", code, err)
	}
	if l := doctorLine(t, out.String(), "upstream (NATS edge)"); !strings.Contains(l, "FAIL") || !strings.Contains(l, "is the account side's obmux running") {
		t.Errorf("edge, no stream: %s", l)
	}

	acct := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_NATS_URL="+ns.URL())
	eventually(t, "the stream exists", func() bool { return acct.metric("obmux_nats_published_total") >= 1 })
	out.Reset()
	err = run(ctxT(t), []string{"doctor"}, env, &out, &out)
	if code := exitCode(err, &bytes.Buffer{}); code != 0 {
		t.Errorf("edge: exit %d (%v):\n%s", code, err, out.String())
	}
	if l := doctorLine(t, out.String(), "upstream (NATS edge)"); !strings.Contains(l, "OK") || !strings.Contains(l, "consumer doc is new") {
		t.Errorf("edge: %s", l)
	}
}

// accountSide starts a JetStream server, a simulated implementation and an
// account-side obmux publishing to the server, connected.
func accountSide(t *testing.T) (*natstest.Server, *upstream, *instance) {
	t.Helper()
	ns := natstest.Start(t, t.TempDir(), 0)
	up := newUpstream(t, "127.0.0.1:0")
	acct := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_NATS_URL="+ns.URL())
	up.connected()
	return ns, up, acct
}

// consuming waits until the edge's /readyz says it takes events from the
// stream.
func consuming(t *testing.T, edge interface{ get(string) (int, string) }) {
	t.Helper()
	eventually(t, "the edge consumes", func() bool { code, _ := edge.get("/readyz"); return code == http.StatusOK })
}
