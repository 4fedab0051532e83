package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/internal/sim"
)

// statusTarget is a simulated framework that answers every handshake with
// code (401, 403).
func statusTarget(t *testing.T, code int) *target {
	tg := newTarget(t)
	tg.Check = func(*http.Request) int { return code }
	return tg
}

// doctorLine returns the report's line for what ("upstream", "target x").
func doctorLine(t *testing.T, out, what string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 2 && strings.HasPrefix(strings.TrimSpace(l[6:]), what+" ") {
			return l
		}
	}
	t.Fatalf("no line for %s in:\n%s", what, out)
	return ""
}

// obmux doctor against real simulated peers: the upstream answers
// get_login_info (the self_id for the targets' headers), one target takes the
// connection, the others answer 401, 403, 404, refuse TCP or close at once;
// each gets its line, in the user's terms, and the exit status is 1.
func TestDoctorTriesEveryConnection(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	good := newTarget(t)
	t401, t403 := statusTarget(t, http.StatusUnauthorized), statusTarget(t, http.StatusForbidden)
	t404 := newTarget(t)
	koishi := newTarget(t)
	kctx, stopKoishi := context.WithCancel(context.Background())
	var kwg sync.WaitGroup
	kwg.Go(func() { // Koishi with a selfId that is not the account's
		for {
			p, err := koishi.Next(kctx)
			if err != nil {
				return
			}
			p.WS.Close(websocket.StatusPolicyViolation, "invalid x-self-id")
		}
	})
	defer kwg.Wait()
	defer stopKoishi()
	env := []string{"OBMUX_UPSTREAM_URL=" + up.URL + "?access_token=" + secret("q"), "OBMUX_UPSTREAM_TOKEN=" + secret("up"),
		"OBMUX_METRICS_LISTEN=127.0.0.1:0",
		"OBMUX_TARGET_GOOD_URL=" + good.URL, "OBMUX_TARGET_GOOD_TOKEN=" + secret("good"),
		"OBMUX_TARGET_T401_URL=" + t401.URL, "OBMUX_TARGET_T403_URL=" + t403.URL,
		"OBMUX_TARGET_T404_URL=" + strings.TrimSuffix(t404.URL, "/ws"), "OBMUX_TARGET_GONE_URL=ws://" + closedPort(t) + "/onebot/v11/ws",
		"OBMUX_TARGET_KOISHI_URL=" + strings.TrimSuffix(koishi.URL, "/v11/ws") + "/v11/ws", "OBMUX_TARGET_GOOD_GROUPS=111"}
	var out bytes.Buffer
	err := run(ctxT(t), []string{"doctor"}, env, &out, &out)
	o := out.String()
	t.Logf("obmux doctor:\n%s", o)
	if code := exitCode(err, &bytes.Buffer{}); code != 1 {
		t.Errorf("exit %d (%v), want 1", code, err)
	}
	if strings.Contains(o, "sEcReT") {
		t.Error("the report shows a token or a URL query")
	}
	for _, want := range []string{"configuration: OK", "* OBMUX_UPSTREAM_TOKEN", "***", "* OBMUX_TARGET_GOOD_GROUPS         111",
		"  OBMUX_QUEUE_SIZE                 1024", "3 of 8 OK"} {
		if !strings.Contains(o, want) {
			t.Errorf("the report does not say %q", want)
		}
	}
	for what, wants := range map[string][]string{
		"upstream":      {"OK ", "get_login_info", "QQ 10001 (obmux-sim)"},
		"target good":   {"OK ", "handshake", "ping", "X-Self-ID 10001"},
		"target t401":   {"FAIL", "HTTP 401 Unauthorized", "set OBMUX_TARGET_T401_TOKEN"},
		"target t403":   {"FAIL", "HTTP 403 Forbidden", "ONEBOT_ACCESS_TOKEN", "/onebot/v11/ws, not /onebot/v11", "same X-Self-ID"},
		"target t404":   {"FAIL", "HTTP 404 Not Found", "wrong path"},
		"target gone":   {"FAIL", "dial tcp 127.0.0.1:", "connect: connection refused: nothing listens", "HOST=0.0.0.0"},
		"target koishi": {"FAIL", `closed it at once (close 1008 StatusPolicyViolation: "invalid x-self-id")`, "Koishi's selfId"},
		"metrics":       {"OK ", "free"},
	} {
		l := doctorLine(t, o, what)
		for _, w := range wants {
			if !strings.Contains(l, w) {
				t.Errorf("%s: %q does not say %q", what, l, w)
			}
		}
	}
	// The headers obmux would send.
	p := up.connected()
	if got := p.Header.Get("Authorization"); got != "Bearer "+secret("up") {
		t.Errorf("upstream Authorization %q", got)
	}
	gp, err := good.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"X-Self-ID": "10001", "X-Client-Role": "Universal", "User-Agent": "obmux/" + version,
		"Authorization": "Bearer " + secret("good")} {
		if got := gp.Header.Get(k); got != want {
			t.Errorf("target header %s: %q, want %q", k, got, want)
		}
	}
	if first := next(t, gp); !strings.Contains(string(first), `"sub_type":"connect"`) {
		t.Errorf("the target was not greeted: %s", first)
	}
}

// Listening for the implementation, without OBMUX_SELF_ID: the doctor waits
// for it to connect, learns the self_id from its X-Self-ID, says what NapCat
// must be told, dials the target with it, and exits 0 when all is OK.
func TestDoctorListeningLearnsTheSelfID(t *testing.T) {
	good := newTarget(t)
	addr := closedPort(t)
	env := []string{"OBMUX_UPSTREAM_LISTEN=" + addr, "OBMUX_UPSTREAM_TOKEN=tok", "OBMUX_METRICS_LISTEN=127.0.0.1:0",
		"OBMUX_FORWARD_LISTEN=127.0.0.1:0", "OBMUX_TARGET_NB_URL=" + good.URL}
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- runDoctor(ctxT(t), env, &out, doctorOpts{UpstreamWait: wait}) }()
	// NapCat, retrying until the doctor listens; first with a wrong token.
	var p *sim.Peer
	eventually(t, "the implementation connected", func() bool {
		_, resp, err := sim.Dial(ctxT(t), "ws://"+addr+"/onebot/v11/ws", http.Header{"Authorization": {"Bearer wrong"}})
		if err == nil || resp == nil {
			return false
		}
		p, _, err = sim.Dial(ctxT(t), "ws://"+addr+"/onebot/v11/ws", http.Header{"X-Self-ID": {"10001"}, "Authorization": {"Bearer tok"}})
		return err == nil
	})
	defer p.Close()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * wait):
		t.Fatal("doctor did not finish")
	}
	o := out.String()
	t.Logf("obmux doctor:\n%s", o)
	if err != nil {
		t.Errorf("doctor: %v, want all OK", err)
	}
	for what, wants := range map[string][]string{
		"upstream":   {"OK ", "connected from 127.0.0.1:", "as QQ 10001"},
		"target nb":  {"OK ", "X-Self-ID 10001"},
		"forward-WS": {"OK ", "free"},
	} {
		l := doctorLine(t, o, what)
		for _, w := range wants {
			if !strings.Contains(l, w) {
				t.Errorf("%s: %q does not say %q", what, l, w)
			}
		}
	}
	if !strings.Contains(o, "4 of 4 OK") || strings.Contains(o, "tok\n") {
		t.Errorf("report:\n%s", o)
	}
	gp := good.Server
	if tp, err := gp.Next(ctxT(t)); err != nil || tp.Header.Get("X-Self-ID") != "10001" {
		t.Errorf("target dialed with %v (%v)", tp, err)
	}
}

// Every configuration problem is reported, the effective configuration is
// still printed, and the exit status is 1; with no self_id, the targets are
// not tried, and say why.
func TestDoctorReportsConfigurationProblems(t *testing.T) {
	env := []string{"OBMUX_UPSTREAM_TOKN=x", "OBMUX_QUEUE_SIZE=0", "OBMUX_UPSTREAM_LISTEN=" + closedPort(t),
		"OBMUX_METRICS_LISTEN=127.0.0.1:0", "OBMUX_TARGET_NB_URL=ws://127.0.0.1:1/onebot/v11/ws"}
	var out bytes.Buffer
	err := runDoctor(ctxT(t), env, &out, doctorOpts{UpstreamWait: 50 * time.Millisecond})
	o := out.String()
	if exitCode(err, &bytes.Buffer{}) != 1 {
		t.Errorf("exit %v, want 1", err)
	}
	for _, want := range []string{"configuration: NOT OK", "did you mean OBMUX_UPSTREAM_TOKEN?", "OBMUX_QUEUE_SIZE=0: must be from 1",
		"effective configuration", "* OBMUX_UPSTREAM_TOKN", "no implementation connected within 50ms", "tell NapCat",
		"not tried: the self_id (X-Self-ID) is unknown"} {
		if !strings.Contains(o, want) {
			t.Errorf("the report does not say %q:\n%s", want, o)
		}
	}
}
