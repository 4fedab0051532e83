package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The demo shows what the README promises: events to both bots, koishi going
// away and, when it is back, replayed the messages it missed, then live ones.
func TestDemoShowsAReplay(t *testing.T) {
	out, log := &logBuffer{}, &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, demoTiming{Tick: 20 * time.Millisecond, AwayAfter: 3, Away: 300 * time.Millisecond},
			[]string{"OBMUX_METRICS_LISTEN=127.0.0.1:0", "OBMUX_HEARTBEAT_INTERVAL=0"}, out, log, nil)
	}()
	eventually(t, "koishi replayed", func() bool {
		o := out.String()
		return strings.Contains(o, "koishi   going away") && strings.Contains(o, "koishi   back: obmux replays") &&
			strings.Contains(o, "koishi   got (replayed) ") && strings.Contains(log.String(), "replaying missed events")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	o := out.String()
	if !strings.Contains(o, `nonebot  got {"self_id":10001`) || !strings.Contains(o, "nonebot  calls ") {
		t.Errorf("nonebot did not get events:\n%s", o)
	}
	// After the replayed messages, live ones (not marked) follow.
	back := o[strings.Index(o, "koishi   back"):]
	if i, j := strings.Index(back, "(replayed)"), strings.LastIndex(back, "koishi   got {\"self_id\""); i < 0 || j < i {
		t.Errorf("no live message after the replay:\n%s", back)
	}
	if strings.Contains(log.String(), "\x1b[") {
		t.Error("colour codes in a log that is not a terminal")
	}
}
