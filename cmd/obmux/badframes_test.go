package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// warnings counts the WARN lines of the log with msg and reason (with any
// reason, or none, when reason is "").
func warnings(log, msg, reason string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, `"msg":"`+msg+`"`) &&
			(reason == "" || strings.Contains(line, `"reason":"`+reason+`"`)) {
			n++
		}
	}
	return n
}

// checkDroppedInvalid checks that in counted n frames from the peer name
// dropped as invalid and n as invalid_utf8, and logged each reason at warn
// once, with msg.
func checkDroppedInvalid(t *testing.T, in *instance, name, msg string, n float64) {
	t.Helper()
	for _, reason := range []string{"invalid", "invalid_utf8"} {
		if got := in.metric("obmux_dropped_frames_total", "name="+name, "reason="+reason); got != n {
			t.Errorf("%s = %v, want %v", reason, got, n)
		}
		if w := warnings(in.log.String(), msg, reason); w != 1 {
			t.Errorf("reason %s logged at warn %d times, want once", reason, w)
		}
	}
}

// Issue 13, item 9: from a bot, a frame with an invalid JSON literal or
// invalid UTF-8 is answered with 1400 (valid JSON, valid UTF-8, with the
// caller's echo) and never reaches the upstream; each reason is logged once
// and every frame counted.
func TestInvalidLiteralsAndUTF8FromBots(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_HEARTBEAT_INTERVAL=0")
	up.connected()
	p := tg.accept()
	bad := []struct{ frame, says string }{
		{`{"echo":"e1","action":"send_msg","params":{"user_id":1,"message":nulx}}`, "bad literal"},
		{`{"echo":"e2","action":"send_msg","params":{"auto_escape":tru}}`, "bad literal"},
		{`{"echo":"e3","action":"send_msg","params":{"user_id":01}}`, "bad number"},
		{"{\"echo\":\"e4\",\"action\":\"send_msg\",\"params\":{\"message\":\"caf\xe9\"}}", "invalid UTF-8"},
		{"{\"echo\":\"e5\",\"action\":\"send_msg\",\"params\":{\"message\":\"\xed\xa0\x80\"}}", "invalid UTF-8"},
		{"{\"echo\":\"e6\",\"action\":\"send_msg\",\"params\":{\"message\":\"\xff\"}}", "invalid UTF-8"},
	}
	for _, c := range bad {
		p.Send(ctxT(t), []byte(c.frame))
	}
	for _, c := range bad {
		got := next(t, p)
		echo := c.frame[len(`{"echo":`):strings.Index(c.frame, `,"action"`)]
		if !json.Valid(got) || !utf8.Valid(got) || !bytes.Contains(got, []byte(`"retcode":1400`)) ||
			!bytes.Contains(got, []byte(c.says)) || !bytes.HasSuffix(got, []byte(`"echo":`+echo+`}`)) {
			t.Errorf("%q -> %s, want a valid 1400 saying %q with echo %s", c.frame, got, c.says, echo)
		}
	}
	// Nothing of that reached the upstream: the first call it reads is this one.
	p.Send(ctxT(t), []byte(`{"action":"get_status","echo":"ok"}`))
	if got := next(t, p); !bytes.Contains(got, []byte(`"status":"ok"`)) {
		t.Fatalf("valid call after the bad ones: %s", got)
	}
	for n := len(up.requests); n > 0; n-- {
		if r := <-up.requests; !bytes.Contains(r, []byte(`get_login_info`)) && !bytes.Contains(r, []byte(`get_status`)) {
			t.Errorf("the upstream got %q", r)
		}
	}
	checkDroppedInvalid(t, in, "a", "frame from a peer answered with 1400", 3)
}

// Issue 13, item 9: from the upstream, an event with an invalid literal or
// invalid UTF-8 is dropped: no target gets it, each reason is logged once,
// every one is counted, and the events around them flow.
func TestInvalidLiteralsAndUTF8FromUpstream(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_HEARTBEAT_INTERVAL=0")
	up.connected()
	p := tg.accept()
	good := event(1)
	text, _ := json.Marshal("message 1 [&]")
	for _, bad := range [][]byte{
		bytes.Replace(good, []byte(`"font":14`), []byte(`"font":nulx`), 1),
		bytes.Replace(good, []byte(`"font":14`), []byte(`"font":fals`), 1),
		bytes.Replace(good, text, []byte("\"message \xc3\x28\""), 1),
		bytes.Replace(good, text, []byte("\"\xf8\x88\x80\x80\x80\""), 1),
	} {
		if bytes.Equal(bad, good) {
			t.Fatal("the sample event changed: nothing replaced")
		}
		up.send(bad)
	}
	up.send(good)
	if got := nextEvent(t, p); !bytes.Equal(got, good) {
		t.Fatalf("target got %q, want the valid event", got)
	}
	checkDroppedInvalid(t, in, "upstream", "frame from the upstream dropped: not a valid OneBot frame", 2)
}
