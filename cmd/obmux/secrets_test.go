package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/obmux/obmux/config"
	"github.com/obmux/obmux/internal/sim"
)

// secret returns a planted credential; every one holds "sEcReT", which no
// other text does.
func secret(what string) string { return "sEcReT" + what }

// closedPort returns an address on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// No credential of the configuration, nor one a peer sent, appears in any
// log line, /readyz, /healthz, /status, /metrics or a configuration error:
// tokens, URL queries (?access_token=) and URL userinfo (user:password@),
// with targets that are unreachable, refuse the token or connect, and peers
// that present wrong tokens.
func TestNoSecretInLogsPagesOrConfigErrors(t *testing.T) {
	ok, refusing := newTarget(t), newTarget(t)
	refusing.Check = bearer("other")
	hook := make(chan struct{}, 16)
	receiver := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hook <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go receiver.Serve(rl)
	defer receiver.Close()
	withCreds := func(rawURL, who string) string {
		u := strings.Replace(rawURL, "ws://", "ws://"+secret(who+"user")+":"+secret(who+"pass")+"@", 1)
		return u + "?access_token=" + secret(who+"query")
	}
	in := start(t, "OBMUX_SELF_ID=10001", "OBMUX_UPSTREAM_TOKEN="+secret("uptoken"),
		"OBMUX_FORWARD_LISTEN=127.0.0.1:0", "OBMUX_FORWARD_TOKEN="+secret("fwdtoken"),
		"OBMUX_TARGET_DOWN_URL="+withCreds("ws://"+closedPort(t)+"/onebot/v11/ws", "down"),
		"OBMUX_TARGET_DOWN_TOKEN="+secret("downtoken"),
		"OBMUX_TARGET_REFUSING_URL="+withCreds(refusing.URL, "refusing"),
		"OBMUX_TARGET_REFUSING_TOKEN="+secret("refusingtoken"),
		"OBMUX_TARGET_OK_URL="+withCreds(ok.URL, "ok"),
		"OBMUX_NOTIFY_URL=http://"+secret("hookuser")+":"+secret("hookpass")+"@"+rl.Addr().String()+"/hook?token="+secret("hookquery"),
		"OBMUX_NOTIFY_AFTER=0")
	ok.accept()

	// Peers with wrong credentials: the implementation and forward clients.
	ctx := ctxT(t)
	for _, c := range []struct {
		url, auth string
		want      int
	}{
		{"ws://" + in.addrs.Upstream + "/onebot/v11/ws?access_token=" + secret("wrongup"), "", http.StatusForbidden},
		{"ws://" + in.addrs.Upstream + "/onebot/v11/ws", "Bearer " + secret("wrongupbearer"), http.StatusForbidden},
		{"ws://" + in.addrs.Upstream + "/wrong/path?access_token=" + secret("wrongpath"), "", http.StatusNotFound},
		{"ws://" + in.addrs.Forward + "/?access_token=" + secret("wrongfwd"), "", http.StatusForbidden},
		{"ws://" + in.addrs.Forward + "/api", "Bearer " + secret("wrongfwdbearer"), http.StatusForbidden},
	} {
		h := http.Header{}
		if c.auth != "" {
			h.Set("Authorization", c.auth)
		}
		_, resp, err := sim.Dial(ctx, c.url, h)
		if err == nil || resp == nil || resp.StatusCode != c.want {
			t.Fatalf("%s: got %v %v, want HTTP %d", c.url, resp, err, c.want)
		}
	}
	// Wait for each failure to be logged and shown.
	eventually(t, "the failures in the log and on /readyz", func() bool {
		log := in.log.String()
		_, ready := in.get("/readyz")
		return strings.Count(log, `"msg":"cannot connect to target"`) >= 2 && strings.Contains(log, `"msg":"target connected"`) &&
			strings.Contains(log, "upstream connection refused") && strings.Contains(log, "forward client refused") &&
			strings.Contains(log, "wrong path") && strings.Contains(log, `"msg":"notifying"`) &&
			strings.Count(ready, `"last_error"`) >= 2
	})
	select {
	case <-hook:
	case <-ctx.Done():
		t.Fatal("no notification reached the receiver")
	}

	pages := map[string]string{"log": in.log.String()}
	for _, path := range []string{"/readyz", "/healthz", "/status", "/metrics", "/"} {
		_, pages[path] = in.get(path)
	}
	// A configuration with malformed URLs that hold credentials.
	bad := []string{
		"OBMUX_UPSTREAM_URL=http://" + secret("u1") + ":" + secret("p1") + "@h/?access_token=" + secret("q1"),
		"OBMUX_TARGET_A_URL=ws://" + secret("u2") + ":" + secret("p 2") + "@h/?access_token=" + secret("q2"),
		"OBMUX_TARGET_B_URL=ws://" + secret("u3") + ":" + secret("p3/x") + "@h/?access_token=" + secret("q3"),
		"OBMUX_TARGET_C_URL=ws://" + secret("u4") + ":" + secret("p4%zz") + "@h:1/",
		"OBMUX_TARGET_D_URL=ftp://" + secret("u5") + ":" + secret("p5") + "@h/?access_token=" + secret("q5"),
		"OBMUX_NOTIFY_URL=ws://" + secret("u6") + ":" + secret("p6") + "@h/?token=" + secret("q6"),
		"OBMUX_TARGET_A_TOKEN=" + secret("t2"),
	}
	if _, err := config.Load(bad); err == nil {
		t.Error("the malformed configuration was accepted")
	} else {
		pages["config error"] = err.Error()
		if strings.Count(err.Error(), "\n") < 5 {
			t.Errorf("not every malformed URL was reported:\n%s", err)
		}
	}
	var stderr bytes.Buffer
	if code := exitCode(run(context.Background(), nil, bad, &stderr, &stderr), &stderr); code != 2 {
		t.Errorf("exit code %d for a bad configuration, want 2", code)
	}
	pages["obmux's output on a bad configuration"] = stderr.String()

	for where, text := range pages {
		if i := strings.Index(text, "sEcReT"); i >= 0 {
			t.Errorf("%s shows a credential: …%s…", where, text[max(0, i-80):min(len(text), i+40)])
		}
	}
	t.Logf("config error:\n%s", pages["config error"])
}
