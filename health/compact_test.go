package health

import (
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/obmux/obmux/onebot"
)

// The compact children count as client_golang's do (whole and fractional
// increments, gauges up and down and set), are exposed with their labels
// at 0 from the start, and are shared by connections with the same labels.
func TestCompactChildren(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "test")
	a := m.Conn(RoleTarget, "a")
	a.FramesOut[onebot.KindEvent].Inc()
	a.BytesOut.Add(300)
	a.BytesOut.Add(0.5)
	a.Up.Inc()
	a.Up.Inc()
	a.Up.Dec()
	a.PingRTT.Set(0.25)
	a.Dropped[DropOldest].Add(7)
	for name, want := range map[string]float64{
		"frames": testutil.ToFloat64(a.FramesOut[onebot.KindEvent]) - 1, "bytes": testutil.ToFloat64(a.BytesOut) - 300.5,
		"up": testutil.ToFloat64(a.Up) - 1, "rtt": testutil.ToFloat64(a.PingRTT) - 0.25, "dropped": testutil.ToFloat64(a.Dropped[DropOldest]) - 7,
	} {
		if want != 0 {
			t.Errorf("%s off by %v", name, want)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a counter took a negative Add")
			}
		}()
		a.Connects.Add(-1)
	}()
	// Same role and name: the same children; a family without role shares
	// by name across roles, as a CounterVec did.
	if m.Conn(RoleTarget, "a").BytesOut != a.BytesOut {
		t.Error("a second Conn of target a got children of its own")
	}
	if u := m.Conn(RoleUpstream, "a"); u.Dropped[DropOldest] != a.Dropped[DropOldest] || u.BytesOut == a.BytesOut {
		t.Error("dropped (name only) must be shared by name, bytes (role, name) not")
	}
	want := `
# HELP obmux_dropped_frames_total Frames obmux did not deliver, by reason.
# TYPE obmux_dropped_frames_total counter
obmux_dropped_frames_total{name="a",reason="disconnected"} 0
obmux_dropped_frames_total{name="a",reason="dropped_oldest"} 7
obmux_dropped_frames_total{name="a",reason="invalid"} 0
obmux_dropped_frames_total{name="a",reason="invalid_utf8"} 0
obmux_dropped_frames_total{name="a",reason="oversized"} 0
obmux_dropped_frames_total{name="a",reason="queue_full"} 0
obmux_dropped_frames_total{name="a",reason="target_gone"} 0
# HELP obmux_connection_up 1 while the connection is up (for forward-WS clients: how many are connected on that path).
# TYPE obmux_connection_up gauge
obmux_connection_up{name="a",role="target"} 1
obmux_connection_up{name="a",role="upstream"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "obmux_dropped_frames_total", "obmux_connection_up"); err != nil {
		t.Error(err)
	}
	a.SendWait.Observe(0.03)
	a.SendWait.Observe(0.03)
	a.SendWait.Observe(1000) // past every bound: in +Inf alone
	hist := `
# HELP obmux_send_wait_seconds Time a caller's send waited for the account-wide send rate limit (OBMUX_SEND_RATE), until it was sent or left the queue.
# TYPE obmux_send_wait_seconds histogram
obmux_send_wait_seconds_bucket{name="a",le="0.01"} 0
obmux_send_wait_seconds_bucket{name="a",le="0.05"} 2
obmux_send_wait_seconds_bucket{name="a",le="0.1"} 2
obmux_send_wait_seconds_bucket{name="a",le="0.25"} 2
obmux_send_wait_seconds_bucket{name="a",le="0.5"} 2
obmux_send_wait_seconds_bucket{name="a",le="1"} 2
obmux_send_wait_seconds_bucket{name="a",le="2.5"} 2
obmux_send_wait_seconds_bucket{name="a",le="5"} 2
obmux_send_wait_seconds_bucket{name="a",le="10"} 2
obmux_send_wait_seconds_bucket{name="a",le="30"} 2
obmux_send_wait_seconds_bucket{name="a",le="60"} 2
obmux_send_wait_seconds_bucket{name="a",le="120"} 2
obmux_send_wait_seconds_bucket{name="a",le="300"} 2
obmux_send_wait_seconds_bucket{name="a",le="+Inf"} 3
obmux_send_wait_seconds_sum{name="a"} 1000.06
obmux_send_wait_seconds_count{name="a"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(hist), "obmux_send_wait_seconds"); err != nil {
		t.Error(err)
	}
	if avg, p99 := latency(a.SendWait); avg < 333 || avg > 334 || p99 != 300 {
		t.Errorf("status page latency: avg %v p99 %v, want 333.35 and the largest bound", avg, p99)
	}
	if n, err := testutil.GatherAndCount(reg, "obmux_frames_total"); err != nil || n != 2*2*int(onebot.NumKinds) {
		t.Errorf("obmux_frames_total has %d series (%v), want every direction and kind of both", n, err)
	}
}

// The metric children of one connection are a few KiB: an idle target's
// cost is not its metrics (client_golang's children took 26 KiB a target).
func TestConnMetricsAreSmall(t *testing.T) {
	m := NewMetrics(nil, "test")
	const n = 500
	keep := make([]*ConnMetrics, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range keep {
		keep[i] = m.Conn(RoleTarget, "t"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes of metric children per connection", per)
	if per > 8<<10 {
		t.Errorf("%.0f bytes of metric children per connection, want under 8 KiB", per)
	}
	runtime.KeepAlive(keep)
}
