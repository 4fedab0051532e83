package main

import (
	"bytes"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/obmux/obmux/internal/sim"
)

// The faults an edge must survive without losing an event (found in review,
// each failed before its fix).

// events sends n events from the upstream and returns them.
func sendEvents(up *upstream, from, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = event(from + i)
		up.send(out[i])
	}
	return out
}

// expectEvents reads want from p, in order, skipping heartbeats.
func expectEvents(t *testing.T, p *sim.Peer, want [][]byte, what string) {
	t.Helper()
	for i, w := range want {
		if got := nextEvent(t, p); !bytes.Equal(got, w) {
			t.Fatalf("%s: event %d: %s, want %s", what, i, got, w)
		}
	}
}

// An edge restarted while its target is not accepting yet: nothing is
// acknowledged until the target has connected, and its first connection
// gets what the edge took meanwhile.
func TestNATSEdgeRestartTargetLate(t *testing.T) {
	ns, up, _ := accountSide(t)
	tg := newTarget(t)
	var refuse atomic.Bool
	tg.Check = func(*http.Request) int {
		if refuse.Load() {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	edge := start(t, edgeEnv(ns, "late", tg)...)
	p := tg.accept()
	consuming(t, edge)
	expectEvents(t, p, sendEvents(up, 0, 10), "first run")
	edge.stop()
	floor := ns.AckFloor(t, "ONEBOT", "late")
	refuse.Store(true)
	missed := sendEvents(up, 10, 50)
	start(t, edgeEnv(ns, "late", tg)...)
	eventually(t, "the restarted edge has taken the 50 events", func() bool {
		c := ns.Consumer(t, "ONEBOT", "late")
		return c != nil && c.NumPending == 0 && c.NumAckPending >= 50
	})
	if f := ns.AckFloor(t, "ONEBOT", "late"); f != floor {
		t.Errorf("with its target not connected yet the edge acknowledged up to %d (was %d)", f, floor)
	}
	refuse.Store(false)
	// A repeat of the first run's last events is allowed (those written in
	// the moment before its stop was acknowledged), nothing else.
	p = tg.accept()
	first := nextEvent(t, p)
	repeats := 0
	for messageID(t, first) < 10 {
		repeats++
		first = nextEvent(t, p)
	}
	if !bytes.Equal(first, missed[0]) {
		t.Fatalf("after the restart: %s, want %s", first, missed[0])
	}
	expectEvents(t, p, missed[1:], "after the restart")
	t.Logf("%d repeated after the graceful stop", repeats)
}

// The edge's consumer is deleted (by an operator, or by a second edge of
// the same name): the edge sets it up again and its target goes on.
func TestNATSEdgeConsumerDeleted(t *testing.T) {
	ns, up, _ := accountSide(t)
	tg := newTarget(t)
	edge := start(t, edgeEnv(ns, "del", tg)...)
	p := tg.accept()
	consuming(t, edge)
	expectEvents(t, p, sendEvents(up, 0, 1), "before")
	ns.DeleteConsumer(t, "ONEBOT", "del")
	expectEvents(t, p, sendEvents(up, 1, 5), "after the consumer was deleted")
}

// The edge's link to NATS goes dark while the server sends it events, then
// is cut: what was sent into the dead connection comes again, in order.
func TestNATSEdgeLinkCutInFlight(t *testing.T) {
	ns, up, acct := accountSide(t)
	fp := faultProxy(t, fmt.Sprintf("127.0.0.1:%d", ns.Port()))
	tg := newTarget(t)
	edge := start(t, "OBMUX_UPSTREAM_URL=nats://"+fp.Addr, "OBMUX_SELF_ID=10001", "OBMUX_NATS_CONSUMER=cut", "OBMUX_TARGET_A_URL="+tg.URL)
	p := tg.accept()
	consuming(t, edge)
	expectEvents(t, p, sendEvents(up, 0, 1), "before")
	fp.Blackhole(true)
	dark := sendEvents(up, 1, 20)
	eventually(t, "published", func() bool { return acct.metric("obmux_nats_published_total") >= 22 })
	fp.Cut()
	fp.Blackhole(false)
	after := sendEvents(up, 21, 20)
	expectEvents(t, p, append(dark, after...), "across the cut")
}
