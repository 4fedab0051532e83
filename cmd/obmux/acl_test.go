package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/obmux/obmux/internal/sim"
)

// upstreamSaw returns the actions of the requests the upstream received,
// in order, up to and including the first whose frame contains until.
func upstreamSaw(t *testing.T, up *upstream, until string) []string {
	t.Helper()
	var seen []string
	for {
		select {
		case req := <-up.requests:
			var r sim.Request
			if err := json.Unmarshal(req, &r); err != nil {
				t.Fatalf("upstream got %s: %v", req, err)
			}
			seen = append(seen, r.Action)
			if bytes.Contains(req, []byte(until)) {
				return seen
			}
		case <-ctxT(t).Done():
			t.Fatalf("the upstream never got %s; it got %q", until, seen)
		}
	}
}

// OBMUX_TARGET_<NAME>_API_ALLOW/_API_DENY and OBMUX_FORWARD_API_DENY: a
// refused call is answered 1403 at once with the caller's echo, never
// reaches the upstream, is counted as forbidden and logged once per action
// and bot; permitted calls go through as before.
func TestAPIPermissions(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	ro, nokick := newTarget(t), newTarget(t)
	in := startForward(t, up, "OBMUX_HEARTBEAT_INTERVAL=0",
		"OBMUX_TARGET_RO_URL="+ro.URL, "OBMUX_TARGET_RO_API_ALLOW=get_*,can_*",
		"OBMUX_TARGET_NOKICK_URL="+nokick.URL, "OBMUX_TARGET_NOKICK_API_DENY=set_group_kick,set_group_ban",
		"OBMUX_FORWARD_API_DENY=send_*")
	pr, pk := ro.accept(), nokick.accept()
	fc := dialForward(t, in, "/", nil)

	call := func(p *sim.Peer, req string) string {
		t.Helper()
		if err := p.Send(ctxT(t), []byte(req)); err != nil {
			t.Fatal(err)
		}
		return string(nextEvent(t, p))
	}
	want := `{"status":"failed","retcode":1403,"data":null,` +
		`"message":"obmux: this bot may not call \"send_group_msg\" (refused by its API_ALLOW/API_DENY policy; the call was not sent)",` +
		`"wording":"obmux: this bot may not call \"send_group_msg\" (refused by its API_ALLOW/API_DENY policy; the call was not sent)",` +
		`"echo":{"seq":12345678901234567890}}`
	if got := call(pr, `{"action":"send_group_msg","params":{"group_id":1,"message":"hi"},"echo":{"seq":12345678901234567890}}`); got != want {
		t.Fatalf("read-only bot's send:\n got %s\nwant %s", got, want)
	}
	// The suffixes and JSON escapes do not get past the rules.
	for _, req := range []string{`{"action":"send_group_msg_async","echo":2}`, `{"action":"\u0073end_group_msg_rate_limited","echo":3}`} {
		if got := call(pr, req); !strings.Contains(got, `"retcode":1403`) || !strings.Contains(got, `"send_group_msg\"`) {
			t.Errorf("%s -> %s", req, got)
		}
	}
	if got := call(pk, `{"action":"set_group_kick_async","params":{"group_id":1,"user_id":2},"echo":"k"}`); !strings.Contains(got, `"retcode":1403`) || !strings.HasSuffix(got, `"echo":"k"}`) {
		t.Errorf("kick -> %s", got)
	}
	if f := fc.call(`{"action":"send_msg","params":{"user_id":2,"message":"x"},"echo":"f"}`); f.Retcode == nil || *f.Retcode != 1403 {
		t.Errorf("forward client's send_msg: retcode %v, want 1403", f.Retcode)
	}
	// What is permitted goes through; each bot's call is the first of its
	// own the upstream sees, so none of the refused ones reached it.
	if got := call(pr, `{"action":"get_status","echo":"ro"}`); !strings.Contains(got, `"status":"ok"`) {
		t.Errorf("read-only bot's get_status -> %s", got)
	}
	if got := call(pk, `{"action":"send_msg","params":{"user_id":2,"message":"y"},"echo":"nk"}`); !strings.Contains(got, `"status":"ok"`) {
		t.Errorf("no-kick bot's send_msg -> %s", got)
	}
	if f := fc.call(`{"action":"get_login_info","echo":"fl"}`); f.Retcode == nil || *f.Retcode != 0 {
		t.Errorf("forward client's get_login_info: retcode %v", f.Retcode)
	}
	seen := upstreamSaw(t, up, `"user_id":2,"message":"y"`)
	seen = append(seen, upstreamSaw(t, up, `"get_login_info"`)...)
	for _, a := range seen {
		if strings.HasPrefix(a, "send_group_msg") || strings.HasPrefix(a, "set_group_kick") {
			t.Errorf("a refused call reached the upstream: %q", seen)
		}
	}
	if strings.Count(strings.Join(seen, ","), "send_msg") != 1 {
		t.Errorf("the upstream saw %q: want the no-kick bot's send_msg only, not the forward client's", seen)
	}

	if got := in.metric("obmux_api_requests_total", "name=ro", "outcome=forbidden"); got != 3 {
		t.Errorf("ro forbidden: %v, want 3", got)
	}
	if got := in.metric("obmux_api_requests_total", "name=nokick", "outcome=forbidden"); got != 1 {
		t.Errorf("nokick forbidden: %v, want 1", got)
	}
	if got := in.metric("obmux_api_requests_total", "outcome=forbidden"); got != 5 {
		t.Errorf("forbidden in all: %v, want 5", got)
	}
	// Logged once per action and bot at warn (three refusals of one
	// action by ro: one warning), the repeats at debug.
	log := in.log.String()
	warn := `"level":"WARN","msg":"API call refused by the bot's policy (repeats of this action are logged at debug)"`
	if n := strings.Count(log, warn); n != 3 {
		t.Errorf("%d warnings, want 3 (ro/send_group_msg, nokick/set_group_kick, /send_msg)", n)
	}
	if n := strings.Count(log, `"level":"DEBUG","msg":"API call refused by the bot's policy"`); n != 2 {
		t.Errorf("%d debug lines, want 2", n)
	}
}
