package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/obmux/obmux/internal/sim"
)

// answerGroupList makes up answer get_group_list (which sim.Answer does not
// know) with an empty list.
func answerGroupList(up *upstream) {
	up.custom = func(p *sim.Peer, req []byte) bool {
		var r sim.Request
		if json.Unmarshal(req, &r) != nil || r.Action != "get_group_list" {
			return false
		}
		p.Send(context.Background(), sim.Response(`"ok"`, 0, "[]", r.Echo))
		return true
	}
}

// drainRequests returns the actions and echoes of the requests the
// upstream has received so far and not yet returned.
func drainRequests(t *testing.T, up *upstream) []sim.Request {
	t.Helper()
	var out []sim.Request
	for {
		select {
		case b := <-up.requests:
			var r sim.Request
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("upstream got %s", b)
			}
			out = append(out, r)
		default:
			return out
		}
	}
}

// nextRequest waits for the upstream's next request.
func nextRequest(t *testing.T, up *upstream) sim.Request {
	t.Helper()
	select {
	case b := <-up.requests:
		var r sim.Request
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("upstream got %s", b)
		}
		return r
	case <-ctxT(t).Done():
		t.Fatal("the upstream got no more requests")
		return sim.Request{}
	}
}

// OBMUX_SEND_RATE: one bot floods 50 sends; another bot's single send goes
// out within one turn of the queue and its get_group_list at once, while the
// flood still waits; the flood goes out in order, every call answered once,
// and heartbeats keep reaching the flooding bot meanwhile.
func TestSendRateFloodIsFair(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	answerGroupList(up)
	flood, other := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_HEARTBEAT_INTERVAL=50ms", "OBMUX_SEND_RATE=20/s",
		"OBMUX_TARGET_FLOOD_URL="+flood.URL, "OBMUX_TARGET_OTHER_URL="+other.URL)
	up.connected()
	pf, po := flood.accept(), other.accept()
	eventually(t, "obmux's get_login_info", func() bool { return in.metric("obmux_api_requests_total", "name=upstream") == 1 })
	drainRequests(t, up)

	const n = 50
	for i := 1; i <= n; i++ {
		req := fmt.Sprintf(`{"action":"send_group_msg","params":{"group_id":111,"message":"flood %d"},"echo":%d}`, i, i)
		if err := pf.Send(ctxT(t), []byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the flood queued", func() bool { return in.metric("obmux_send_queue_length", "name=flood") >= 30 })
	before := 0 // the flood's sends out before the other bot calls
	for _, r := range drainRequests(t, up) {
		if r.Action == "send_group_msg" {
			before++
		}
	}
	po.Send(ctxT(t), []byte(`{"action":"send_msg","params":{"user_id":2,"message":"reply"},"echo":"reply"}`))
	po.Send(ctxT(t), []byte(`{"action":"get_group_list","echo":"groups"}`))

	// The order at the upstream, to the flood's last send. The
	// get_group_list is written upstream as soon as it is read, after the
	// other bot's send was queued: from there, the reply waits for at most
	// two of the flood's sends (one popped before it was queued and still
	// on its way, and one more because the flood, just served, was ahead
	// of it in turn). Neither waits for the flood to go out.
	floodSeen, list, reply := before, -1, -1
	for floodSeen < n || list < 0 || reply < 0 {
		switch r := nextRequest(t, up); r.Action {
		case "send_group_msg":
			floodSeen++
		case "get_group_list":
			list = floodSeen
		case "send_msg":
			reply = floodSeen
		}
	}
	t.Logf("of the flood's %d sends: %d out before the other bot called, %d before its get_group_list, %d before its reply", n, before, list, reply)
	if n-list < 10 {
		t.Errorf("get_group_list went out after %d of the flood's %d sends: it waited behind sends", list, n)
	}
	if reply-list > 2 {
		t.Errorf("the other bot's reply went out %d of the flood's sends after its get_group_list: more than one turn", reply-list)
	}
	if n-reply < 10 {
		t.Errorf("the other bot's reply went out after %d of the flood's %d sends: it waited behind the flood", reply, n)
	}
	answers := string(nextEvent(t, po)) + string(nextEvent(t, po))
	for _, echo := range []string{`"echo":"reply"}`, `"echo":"groups"}`} {
		if strings.Count(answers, echo) != 1 || strings.Count(answers, `"status":"ok"`) != 2 {
			t.Errorf("other bot's answers: %s", answers)
		}
	}

	// The flood: every send answered once, in order, with heartbeats
	// between the answers.
	heartbeats, want := 0, 1
	for want <= n {
		b := next(t, pf)
		if bytes.Contains(b, []byte(`"meta_event_type":"heartbeat"`)) {
			if want > 1 {
				heartbeats++
			}
			continue
		}
		if echo := fmt.Sprintf(`"echo":%d}`, want); !bytes.Contains(b, []byte(`"status":"ok"`)) || !bytes.HasSuffix(b, []byte(echo)) {
			t.Fatalf("flood answer %d: %s", want, b)
		}
		want++
	}
	if heartbeats < 5 {
		t.Errorf("%d heartbeats reached the flooding bot while its %d sends went out over 2.5 s (every 50ms)", heartbeats, n)
	}
	if got := in.metric("obmux_send_wait_seconds", "name=flood"); got != n {
		t.Errorf("obmux_send_wait_seconds{name=flood} counted %v sends, want %d", got, n)
	}
	if got := in.metric("obmux_send_wait_seconds", "name=other"); got != 1 {
		t.Errorf("obmux_send_wait_seconds{name=other} counted %v sends, want 1", got)
	}
	if got := in.metric("obmux_send_queue_length"); got != 0 {
		t.Errorf("obmux_send_queue_length %v after the flood", got)
	}
}

// A send still waiting for the rate limit when OBMUX_API_TIMEOUT runs out is
// answered 1504 saying so and never sent; a get_status meanwhile is not held
// up. A bot that goes away with sends queued: none of them is sent. The
// upstream dropping: every queued send answered 1502 at once, once.
func TestSendRateTimeoutAndEveryCallAnswered(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	a, b := newTarget(t), newTarget(t)
	var gb gate
	b.Check = gb.check
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_SEND_RATE=1/h", "OBMUX_SEND_BURST=1",
		"OBMUX_API_TIMEOUT=1s", "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL)
	up.connected()
	pa, pb := a.accept(), b.accept()
	eventually(t, "obmux's get_login_info", func() bool { return in.metric("obmux_api_requests_total", "name=upstream") == 1 })
	drainRequests(t, up)

	pa.Send(ctxT(t), []byte(`{"action":"send_msg","params":{"user_id":2,"message":"1"},"echo":"first"}`))
	if got := string(nextEvent(t, pa)); !strings.Contains(got, `"status":"ok"`) {
		t.Fatalf("the burst's send: %s", got)
	}
	drainRequests(t, up) // it, sent: from here on the upstream must see no send
	pa.Send(ctxT(t), []byte(`{"action":"send_msg_async","params":{"user_id":2,"message":"2"},"echo":"second"}`))
	pa.Send(ctxT(t), []byte(`{"action":"get_status","echo":"status"}`))
	if got := string(nextEvent(t, pa)); !strings.HasSuffix(got, `"echo":"status"}`) || !strings.Contains(got, `"status":"ok"`) {
		t.Fatalf("get_status behind a queued send: %s", got)
	}
	want := `{"status":"failed","retcode":1504,"data":null,` +
		`"message":"obmux: waited OBMUX_API_TIMEOUT=1s for the send rate limit (OBMUX_SEND_RATE=1/h); the message was not sent",` +
		`"wording":"obmux: waited OBMUX_API_TIMEOUT=1s for the send rate limit (OBMUX_SEND_RATE=1/h); the message was not sent","echo":"second"}`
	if got := string(nextEvent(t, pa)); got != want {
		t.Fatalf("queued send at its timeout:\n got %s\nwant %s", got, want)
	}
	if got := in.metric("obmux_api_requests_total", "name=a", "outcome=timeout"); got != 1 {
		t.Errorf("timeouts counted: %v", got)
	}
	if !strings.Contains(in.log.String(), `"level":"WARN","msg":"a send timed out waiting for the send rate limit`) {
		t.Error("the timeout in the queue is not logged")
	}

	// b queues three sends and goes away: none is sent.
	for i := range 3 {
		pb.Send(ctxT(t), fmt.Appendf(nil, `{"action":"send_group_msg","params":{"group_id":1,"message":"b%d"},"echo":%d}`, i, i))
	}
	eventually(t, "b's sends queued", func() bool { return in.metric("obmux_send_queue_length", "name=b") == 3 })
	gb.closed.Store(true)
	pb.Close()
	eventually(t, "b's queue dropped", func() bool { return in.metric("obmux_send_queue_length", "name=b") == 0 })

	// a queues three; the upstream drops: three 1502 answers, once each.
	for i := range 3 {
		pa.Send(ctxT(t), fmt.Appendf(nil, `{"action":"send_msg","params":{"user_id":2,"message":"a%d"},"echo":%d}`, i, i))
	}
	eventually(t, "a's sends queued", func() bool { return in.metric("obmux_send_queue_length", "name=a") == 3 })
	pa.Send(ctxT(t), []byte(`{"action":"get_status","echo":"last"}`))
	if got := string(nextEvent(t, pa)); !strings.HasSuffix(got, `"echo":"last"}`) {
		t.Fatalf("get_status: %s", got)
	}
	for _, r := range drainRequests(t, up) {
		if strings.HasPrefix(r.Action, "send_") {
			t.Errorf("a queued send reached the upstream: %s %s", r.Action, r.Params)
		}
	}
	up.Close()
	answered := map[string]int{}
	for range 3 {
		got := string(nextEvent(t, pa))
		if !strings.Contains(got, `"retcode":1502`) {
			t.Errorf("queued send when the upstream dropped: %s", got)
		}
		answered[got[strings.LastIndex(got, `"echo":`):]]++
	}
	if len(answered) != 3 {
		t.Errorf("answers by echo: %v", answered)
	}
	if got := in.metric("obmux_send_queue_length"); got != 0 {
		t.Errorf("obmux_send_queue_length %v", got)
	}
	if got := in.metric("obmux_api_inflight_bytes"); got != 0 {
		t.Errorf("obmux_api_inflight_bytes %v after every call ended", got)
	}
}
