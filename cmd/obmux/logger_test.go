package main

import (
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
