package main

import (
	"testing"
)

// OBMUX_TARGET_<NAME>_REPLAY_MAX_AGE: 0 turns replay off for that bot alone;
// another bot on the same upstream is still replayed what it missed.
func TestReplayMaxAgePerTarget(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	cmd, logger := newTarget(t), newTarget(t)
	var gc, gl gate
	cmd.Check, logger.Check = gc.check, gl.check
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_HEARTBEAT_INTERVAL=0",
		"OBMUX_TARGET_CMD_URL="+cmd.URL, "OBMUX_TARGET_CMD_REPLAY_MAX_AGE=0",
		"OBMUX_TARGET_LOG_URL="+logger.URL)
	up.connected()
	pc, pl := cmd.accept(), logger.accept()
	up.send(event(1))
	next(t, pc)
	next(t, pl)
	gc.closed.Store(true)
	gl.closed.Store(true)
	pc.Close()
	pl.Close()
	eventually(t, "both down", func() bool { return in.metric("obmux_connection_up", "role=target") == 0 })
	for i := 2; i <= 4; i++ {
		up.send(event(i))
	}
	gc.closed.Store(false)
	gl.closed.Store(false)
	pc, pl = cmd.accept(), logger.accept()
	up.send(event(5))
	if got := messageID(t, next(t, pc)); got != 5 {
		t.Errorf("REPLAY_MAX_AGE=0: first event after the reconnect is %d, want 5 (no replay)", got)
	}
	for i := 2; i <= 5; i++ {
		if got := messageID(t, next(t, pl)); got != i {
			t.Fatalf("the other target got %d, want %d (replayed)", got, i)
		}
	}
	if got := in.metric("obmux_replay_lost_total", "name=cmd"); got != 0 {
		t.Errorf("replay off by choice counted %v events as lost", got)
	}
}
