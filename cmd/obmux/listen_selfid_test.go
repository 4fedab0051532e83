package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/obmux/obmux/internal/sim"
)

// Issue 13, item 10: in listen mode without a token (the default), once the
// self_id is known, a connection without X-Self-ID, or with another
// account's, does not replace the implementation's: 409, the first goes on
// serving, each reason logged once per address, every one counted. The same
// account still replaces it.
func TestListenUpstreamReplacementNeedsSelfID(t *testing.T) {
	tg := newTarget(t)
	in := start(t, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_HEARTBEAT_INTERVAL=0")
	url := "ws://" + in.addrs.Upstream + "/onebot/v11/ws"
	// The implementation connects without X-Self-ID; its first frame says who it is.
	first, _, err := sim.Dial(ctxT(t), url, http.Header{"X-Client-Role": {"Universal"}})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.Send(ctxT(t), sim.Lifecycle(testSelfID, "connect"))
	p := tg.accept() // dialed once the self_id is known

	for _, h := range []http.Header{{}, {"X-Self-ID": {"20002"}}, {"X-Client-Role": {"Universal"}}} {
		_, resp, err := sim.Dial(ctxT(t), url, h)
		if err == nil || resp == nil || resp.StatusCode != http.StatusConflict {
			t.Fatalf("X-Self-ID %q while 10001 is connected: want HTTP 409, got %v %v", h.Get("X-Self-ID"), resp, err)
		}
	}
	first.Send(ctxT(t), event(1))
	if got := nextEvent(t, p); !bytes.Equal(got, event(1)) {
		t.Fatalf("after the refusals the target got %s", got)
	}
	select {
	case <-first.Done:
		t.Fatalf("the implementation's connection was replaced: %v", first.Err)
	default:
	}
	if got := in.metric("obmux_auth_failures_total", "listener=upstream", "reason=wrong_self_id"); got != 3 {
		t.Errorf("wrong_self_id refusals = %v, want 3", got)
	}
	// One warn for the address and reason (wrong_self_id), the rest at debug.
	log := in.log.String()
	warns := strings.Count(log, `"level":"WARN","msg":"upstream connection refused: no X-Self-ID while an account is connected"`) +
		strings.Count(log, `"level":"WARN","msg":"upstream connection refused: another account is connected"`)
	if warns != 1 {
		t.Errorf("the 3 refusals were logged at warn %d times, want once", warns)
	}

	second, _, err := sim.Dial(ctxT(t), url, http.Header{"X-Self-ID": {"10001"}})
	if err != nil {
		t.Fatalf("the same account could not replace the connection: %v", err)
	}
	defer second.Close()
	<-first.Done
	second.Send(ctxT(t), event(2))
	if got := nextEvent(t, p); !bytes.Equal(got, event(2)) {
		t.Fatalf("got %s", got)
	}
}

// Issue 13, item 10: obmux warns once at start when the upstream listener
// takes connections from other hosts and has no token.
func TestListenUpstreamWithoutTokenWarnsWhenReachable(t *testing.T) {
	const msg = `"level":"WARN","msg":"the upstream listener is reachable from other hosts and has no token`
	for _, c := range []struct {
		env  []string
		warn int
	}{
		{[]string{"OBMUX_UPSTREAM_LISTEN=0.0.0.0:0"}, 1},
		{[]string{"OBMUX_UPSTREAM_LISTEN=:0"}, 1},
		{[]string{"OBMUX_UPSTREAM_LISTEN=0.0.0.0:0", "OBMUX_UPSTREAM_TOKEN=s3cret"}, 0},
		{[]string{"OBMUX_UPSTREAM_LISTEN=127.0.0.1:0"}, 0},
		{[]string{"OBMUX_UPSTREAM_LISTEN=localhost:0"}, 0},
	} {
		in := start(t, c.env...)
		if n := strings.Count(in.log.String(), msg); n != c.warn {
			t.Errorf("%v: warned %d times, want %d", c.env, n, c.warn)
		}
		in.stop()
	}
}
