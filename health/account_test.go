package health

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestAccountFollowsTheUpstream(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := NewAccount(reg)
	gauge := func() float64 { return testutil.ToFloat64(a.gauge) }
	to := func(s string) float64 {
		return testutil.ToFloat64(a.transitions[map[string]int{"offline": 0, "online": 1}[s]])
	}
	watch := a.Watch()
	step := func(what string, fn func(), online bool, offlines, onlines float64) {
		t.Helper()
		fn()
		st := a.State()
		if st.Up() != online || gauge() != map[bool]float64{true: 1, false: 0}[online] {
			t.Errorf("%s: state %+v, gauge %v; want up=%v", what, st, gauge(), online)
		}
		if to("offline") != offlines || to("online") != onlines {
			t.Errorf("%s: transitions offline %v online %v, want %v %v", what, to("offline"), to("online"), offlines, onlines)
		}
	}
	step("before the upstream connects", func() {}, false, 0, 0)
	step("connected", func() { a.Connected(true) }, true, 0, 0)
	select {
	case <-watch:
	default:
		t.Error("Watch did not signal a change")
	}
	a.SetSelfID(10001)
	a.SetNickname(10001, "bot")
	a.SetNickname(20002, "another") // a late answer for another account
	if st := a.State(); st.SelfID != 10001 || st.Nickname != "bot" {
		t.Errorf("state %+v", st)
	}
	step("heartbeat online", func() { a.Heartbeat(true, true) }, true, 0, 0)
	step("heartbeat not good", func() { a.Heartbeat(true, false) }, true, 0, 0)
	if st := a.State(); st.Good {
		t.Error("good after status.good=false")
	}
	step("heartbeat offline", func() { a.Heartbeat(false, false) }, false, 1, 0)
	if st := a.State(); st.Reason != "heartbeat status.online=false" || st.Since.IsZero() {
		t.Errorf("state %+v", st)
	}
	step("heartbeat online again", func() { a.Heartbeat(true, true) }, true, 1, 1)
	step("bot_offline", func() { a.Event(false, "bot_offline: KickedOffLine: 已在另一台设备登录") }, false, 2, 1)
	// Heartbeats that always said online do not undo the notice.
	step("heartbeat still online", func() { a.Heartbeat(true, true) }, false, 2, 1)
	step("upstream lost", func() { a.Connected(false) }, false, 2, 1)
	step("upstream back", func() { a.Connected(true) }, true, 2, 2)
	step("lifecycle disable", func() { a.Event(false, "lifecycle disable") }, false, 3, 2)
	step("lifecycle enable", func() { a.Event(true, "lifecycle enable") }, true, 3, 3)
	if st := a.State(); st.Transitions != 6 || st.SelfID != 10001 || st.Nickname != "bot" {
		t.Errorf("state %+v", st)
	}
	a.SetSelfID(30003)
	if st := a.State(); st.Nickname != "" {
		t.Errorf("a new account kept the old nickname: %+v", st)
	}

	var none *Account // an Upstream without an account
	none.Connected(true)
	none.Heartbeat(false, false)
	if st := none.State(); st.Up() {
		t.Error("nil account is up")
	}
}
