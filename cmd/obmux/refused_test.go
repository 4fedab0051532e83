package main

import (
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// A framework that accepts the WebSocket and closes it at once (Koishi on
// NoneBot's path, or with another selfId) is a failed dial: logged once
// with the close code and a hint per framework, never as connected or
// disconnected, and not counted as a replay; what it was offered is offered
// again when it finally takes the connection.
func TestTargetThatClosesAtOnceIsAFailedDial(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_KOISHI_URL="+tg.URL, "OBMUX_HEARTBEAT_INTERVAL=0")
	up.connected()
	p := tg.accept()
	up.send(event(1))
	if got := messageID(t, nextEvent(t, p)); got != 1 {
		t.Fatalf("got %d", got)
	}
	p.Close() // lost, no close frame: an ordinary disconnect
	// Its disconnect counted (the gauge is 0 only until the redial, 20 ms
	// later: a poll of it can miss that).
	eventually(t, "the target down", func() bool {
		return in.metric("obmux_disconnects_total", "role=target", "name=koishi", "reason=closed_by_peer") == 1
	})
	for i := 2; i <= 4; i++ {
		up.send(event(i))
	}
	eventually(t, "the disconnect logged", func() bool {
		l := in.log.String()
		return strings.Contains(l, `"msg":"target connected"`) && strings.Contains(l, `"msg":"target disconnected"`)
	})
	connectedBefore := strings.Count(in.log.String(), `"msg":"target connected"`)

	const refusals = 4
	for range refusals {
		p, err := tg.Next(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		next(t, p) // the greeting
		p.WS.Close(websocket.StatusPolicyViolation, "")
		p.Close()
	}
	eventually(t, "the refusals recorded", func() bool {
		return strings.Count(in.log.String(), `"msg":"cannot connect to target"`) >= refusals
	})
	l := in.log.String()
	if n := strings.Count(l, `"level":"WARN","msg":"cannot connect to target"`); n != 1 {
		t.Errorf("%d warnings for %d refusals, want 1 (then debug)", n, refusals)
	}
	for _, want := range []string{"closed it at once (close 1008 StatusPolicyViolation, no reason given)",
		"has NoneBot's path", "Koishi listens on /onebot", "selfId, which must be the QQ number 10001"} {
		if !strings.Contains(l, want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	if n := strings.Count(l, `"msg":"target connected"`); n != connectedBefore {
		t.Errorf("refused connections logged as connected (%d, was %d)", n, connectedBefore)
	}
	if strings.Count(l, `"msg":"target disconnected"`) != 1 || strings.Contains(l, "replaying missed events") {
		t.Errorf("refused connections logged as disconnects or replays:\n%s", l)
	}
	if got := in.metric("obmux_replayed_events_total", "name=koishi"); got != 0 {
		t.Errorf("replayed %v for refused connections", got)
	}
	for _, c := range in.status().Connections {
		if c.Name == "koishi" && !strings.Contains(c.LastError, "closed it at once") {
			t.Errorf("/status last_error %q", c.LastError)
		}
	}

	// The framework takes the connection: it gets what it missed, once.
	p = tg.accept()
	up.send(event(5))
	for i := 2; i <= 5; i++ {
		if got := messageID(t, nextEvent(t, p)); got != i {
			t.Fatalf("after the refusals got %d, want %d", got, i)
		}
	}
	eventually(t, "3 replayed, connected", func() bool {
		return in.metric("obmux_replayed_events_total", "name=koishi") == 3 &&
			strings.Count(in.log.String(), `"msg":"target connected"`) == connectedBefore+1
	})
}
