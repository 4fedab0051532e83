package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// Log lines as a new user reads them: no colour codes when the log is not a
// terminal (a file, a pipe, docker logs), no empty fields, durations as
// "5s" in JSON too.
func TestLogLinesSayOnlyWhatMatters(t *testing.T) {
	text := start(t, "OBMUX_LOG_FORMAT=text")
	text.stop()
	l := text.log.String()
	if strings.Contains(l, "\x1b[") {
		t.Errorf("colour codes in a log that is not a terminal:\n%q", l)
	}
	if !strings.Contains(l, "shutting down timeout=5s") {
		t.Errorf("text log:\n%s", l)
	}

	js := start(t)
	js.stop()
	var shutdown map[string]any
	for _, line := range strings.Split(strings.TrimSpace(js.log.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %s", line)
		}
		for k, v := range m {
			if v == nil || v == "" {
				t.Errorf("empty field %s in %s", k, line)
			}
		}
		if m["msg"] == "shutting down" {
			shutdown = m
		}
	}
	if shutdown["timeout"] != "5s" {
		t.Errorf("shutdown timeout logged as %v, want \"5s\"", shutdown["timeout"])
	}
}

// A start without targets says so; every taken port is named, not only the
// first.
func TestStartWarnsNoTargetAndEveryBusyPort(t *testing.T) {
	bare := start(t)
	eventually(t, "the warning", func() bool {
		return strings.Contains(bare.log.String(), `"level":"WARN","msg":"no target configured: events go nowhere"`)
	})
	tg := newTarget(t)
	with := start(t, "OBMUX_TARGET_NB_URL="+tg.URL)
	with.stop()
	if strings.Contains(with.log.String(), "no target configured") {
		t.Errorf("warned with a target configured:\n%s", with.log.String())
	}
	fwd := start(t, "OBMUX_FORWARD_LISTEN=127.0.0.1:0")
	fwd.stop()
	if !strings.Contains(fwd.log.String(), `"level":"INFO","msg":"no target configured: events go only to forward-WS clients"`) {
		t.Errorf("forward-only start:\n%s", fwd.log.String())
	}

	// bare holds its metrics and upstream ports.
	err := run(context.Background(), nil, []string{"OBMUX_METRICS_LISTEN=" + bare.addrs.Metrics,
		"OBMUX_UPSTREAM_LISTEN=" + bare.addrs.Upstream, "OBMUX_FORWARD_LISTEN=127.0.0.1:0"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("started on taken ports")
	}
	for _, v := range []string{"OBMUX_METRICS_LISTEN=" + bare.addrs.Metrics, "OBMUX_UPSTREAM_LISTEN=" + bare.addrs.Upstream} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("the error does not name %s:\n%v", v, err)
		}
	}
	if strings.Contains(err.Error(), "OBMUX_FORWARD_LISTEN") {
		t.Errorf("a free port reported:\n%v", err)
	}
}
