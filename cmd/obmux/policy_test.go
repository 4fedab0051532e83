package main

import (
	"fmt"
	"testing"

	"github.com/obmux/obmux/internal/sim"
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

func groupEvent(n int, group, user int64) []byte {
	return fmt.Appendf(nil, `{"time":1790000000,"self_id":%d,"post_type":"message","message_type":"group","sub_type":"normal","message_id":%d,`+
		`"group_id":%d,"user_id":%d,"message":[{"type":"text","data":{"text":"m%d"}}],"raw_message":"m%d","font":0,"sender":{"user_id":%d,"role":"member"}}`,
		testSelfID, n, group, user, n, n, user)
}

// Two bots on one upstream with different filters: each gets only its
// events, in order; what each is held back is counted; and a reconnect's
// replay applies the same filter.
func TestTwoBotsDifferentFilters(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	chat, admin := newTarget(t), newTarget(t)
	var ga gate
	admin.Check = ga.check
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_HEARTBEAT_INTERVAL=0",
		"OBMUX_TARGET_CHAT_URL="+chat.URL, "OBMUX_TARGET_CHAT_GROUPS=111,222", "OBMUX_TARGET_CHAT_USERS_DENY=999",
		"OBMUX_TARGET_ADMIN_URL="+admin.URL, "OBMUX_TARGET_ADMIN_GROUPS_DENY=111", "OBMUX_TARGET_ADMIN_SELF_MESSAGES=false",
		`OBMUX_TARGET_ADMIN_FILTER={"sender.role":{".neq":"owner"},"raw_message":{".regex":"^m[0-9]"}}`)
	up.connected()
	pc, pa := chat.accept(), admin.accept()
	events := []struct {
		b           []byte
		chat, admin bool
	}{
		{groupEvent(1, 111, 20002), true, false},      // GROUPS_DENY for admin
		{groupEvent(2, 333, 20002), false, true},      // not in chat's GROUPS
		{groupEvent(3, 222, 999), false, true},        // USERS_DENY for chat
		{groupEvent(4, 222, testSelfID), true, false}, // the account's own: SELF_MESSAGES=false
		{event(5), true, false},                       // private: raw_message "message 5 ...", admin's regex holds it
		{groupEvent(6, 222, 20002), true, true},
	}
	for _, e := range events {
		up.send(e.b)
	}
	for _, w := range []struct {
		p    *sim.Peer
		pick func(int) bool
	}{{pc, func(i int) bool { return events[i].chat }}, {pa, func(i int) bool { return events[i].admin }}} {
		for i := range events {
			if w.pick(i) {
				if got := messageID(t, next(t, w.p)); got != i+1 {
					t.Fatalf("got %d, want %d", got, i+1)
				}
			}
		}
	}
	eventually(t, "the held-back events counted", func() bool {
		return in.metric("obmux_filtered_events_total", "name=chat") == 2 && in.metric("obmux_filtered_events_total", "name=admin") == 3
	})

	// Replay: admin away for two events, one of which its filter holds.
	ga.closed.Store(true)
	pa.Close()
	eventually(t, "admin down", func() bool { return in.metric("obmux_connection_up", "role=target", "name=admin") == 0 })
	up.send(groupEvent(7, 111, 20002))
	up.send(groupEvent(8, 333, 20002))
	ga.closed.Store(false)
	pa = admin.accept()
	up.send(groupEvent(9, 333, 20002))
	for _, want := range []int{8, 9} {
		if got := messageID(t, next(t, pa)); got != want {
			t.Fatalf("after the reconnect admin got %d, want %d (7 is filtered, in replay too)", got, want)
		}
	}
	// Counted once the connection settles; the filtered event is not.
	eventually(t, "1 replayed", func() bool { return in.metric("obmux_replayed_events_total", "name=admin") == 1 })
	if got := in.metric("obmux_replayed_events_total", "name=admin"); got != 1 {
		t.Errorf("replayed %v, want 1 (the filtered event is not counted)", got)
	}
}
