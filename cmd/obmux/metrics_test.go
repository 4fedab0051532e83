package main

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/obmux/obmux/internal/sim"
)

// Tests of obmux's metrics, read from a real scrape of /metrics after real
// traffic.

// mtSeries returns the series of the family name in a scrape whose labels
// include every one of match ("k=v"), keyed by all their labels as
// "k=v,k=v" in name order.
func mtSeries(in *instance, name string, match ...string) map[string]float64 {
	in.t.Helper()
	out := map[string]float64{}
	mf := in.metrics()[name]
	if mf == nil {
		return out
	}
next:
	for _, m := range mf.Metric {
		var labels []string
		have := map[string]string{}
		for _, lp := range m.Label {
			labels = append(labels, lp.GetName()+"="+lp.GetValue())
			have[lp.GetName()] = lp.GetValue()
		}
		for _, l := range match {
			k, v, _ := strings.Cut(l, "=")
			if got, ok := have[k]; !ok || got != v {
				continue next
			}
		}
		sort.Strings(labels)
		out[strings.Join(labels, ",")] = mtValue(m)
	}
	return out
}

func mtValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// mtDiff describes how got differs from want, "" when equal.
func mtDiff(got, want map[string]float64) string {
	keys := map[string]bool{}
	for k := range got {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var b strings.Builder
	for _, k := range sorted {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !gok:
			fmt.Fprintf(&b, "  missing {%s}, want %v\n", k, w)
		case !wok:
			fmt.Fprintf(&b, "  unexpected {%s} = %v\n", k, g)
		case g != w:
			fmt.Fprintf(&b, "  {%s} = %v, want %v\n", k, g, w)
		}
	}
	return b.String()
}

// mtExpect waits until the series of name matching match are exactly want
// (counters are bumped just after a write returns, so the peer may read a
// frame an instant before it is counted), and fails with the difference.
func mtExpect(t *testing.T, in *instance, want map[string]float64, name string, match ...string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		d := mtDiff(mtSeries(in, name, match...), want)
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s%v:\n%s", name, match, d)
			return
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for an event
	}
}

var mtKinds = []string{"event", "heartbeat", "lifecycle", "api_request", "api_response", "invalid"}

// mtFrames returns the obmux_frames_total series of one connection with the
// given per-direction, per-kind counts; every other kind is 0.
func mtFrames(role, name string, in, out map[string]float64) map[string]float64 {
	m := map[string]float64{}
	for _, k := range mtKinds {
		m[fmt.Sprintf("direction=in,kind=%s,name=%s,role=%s", k, name, role)] = in[k]
		m[fmt.Sprintf("direction=out,kind=%s,name=%s,role=%s", k, name, role)] = out[k]
	}
	return m
}

// mtTally counts frames and payload bytes by kind.
type mtTally struct {
	frames map[string]float64
	bytes  float64
}

func (c *mtTally) add(kind string, b []byte) {
	if c.frames == nil {
		c.frames = map[string]float64{}
	}
	c.frames[kind]++
	c.bytes += float64(len(b))
}

// After real traffic through two targets (events of many sizes, API calls,
// a frame obmux answers 1400), obmux_frames_total and obmux_bytes_total of
// each target equal, kind by kind, what its server received and sent; the
// upstream's equal what the simulated implementation sent and received.
// Heartbeats are off so that the counts are exact.
func TestMetricsCountWhatTargetsReceived(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	a, b := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL,
		"OBMUX_HEARTBEAT_INTERVAL=0")
	up.connected()
	peers := map[string]*sim.Peer{}
	got := map[string]*mtTally{}
	sent := map[string]*mtTally{}
	for name, tg := range map[string]*target{"a": a, "b": b} {
		// Only the first connection of a target gets no replay: wait for
		// its lifecycle connect (written once its cursor is attached)
		// before the first event.
		p, err := tg.Next(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		peers[name], got[name], sent[name] = p, &mtTally{}, &mtTally{}
		first := next(t, p)
		if parseFwd(t, first).kind() != "lifecycle:connect" {
			t.Fatalf("%s: first frame %s", name, first)
		}
		got[name].add("lifecycle", first)
	}
	const n = 40
	var events [][]byte
	for i := 1; i <= n; i++ {
		e := sim.PrivateMessage(testSelfID, 20002, int64(i), strings.Repeat("字x", i*53))
		events = append(events, e)
		up.send(e)
	}
	calls := [][]byte{[]byte(`{"action":"get_status","echo":1}`), []byte(`{"action":"get_status","params":{},"echo":"two"}`),
		[]byte(`{"action":"no_such_action","echo":{"seq":3}}`)}
	for _, c := range calls {
		peers["a"].Send(ctxT(t), c)
		sent["a"].add("api_request", c)
	}
	bad := []byte(`{"echo":"bad",}`) // not JSON: answered 1400 by obmux
	peers["a"].Send(ctxT(t), bad)
	sent["a"].add("invalid", bad)

	responses := map[string]int{"a": len(calls) + 1, "b": 0}
	for name, p := range peers {
		ev, resp := 0, 0
		for ev < n || resp < responses[name] {
			fr := next(t, p)
			f := parseFwd(t, fr)
			switch f.kind() {
			case "event":
				if !bytes.Equal(fr, events[ev]) {
					t.Fatalf("%s: event %d: %.100s", name, ev+1, fr)
				}
				ev++
				got[name].add("event", fr)
			case "response":
				resp++
				got[name].add("api_response", fr)
			default:
				t.Fatalf("%s: unexpected frame %s", name, fr)
			}
		}
		if got[name].frames["lifecycle"] != 1 {
			t.Errorf("%s: %v lifecycle frames", name, got[name].frames["lifecycle"])
		}
	}

	for name := range peers {
		want := mtFrames("target", name, sent[name].frames, got[name].frames)
		mtExpect(t, in, want, "obmux_frames_total", "role=target", "name="+name)
		mtExpect(t, in, map[string]float64{
			"direction=in,name=" + name + ",role=target":  sent[name].bytes,
			"direction=out,name=" + name + ",role=target": got[name].bytes,
		}, "obmux_bytes_total", "role=target", "name="+name)
	}
	// The sum over kinds, as a dashboard would compute it.
	for name := range peers {
		total := 0.0
		for _, v := range got[name].frames {
			total += v
		}
		if s := in.metric("obmux_frames_total", "role=target", "name="+name, "direction=out"); s != total {
			t.Errorf("%s: frames out summed over kinds = %v, the target received %v", name, s, total)
		}
	}
	mtExpect(t, in, map[string]float64{"name=a,outcome=ok": 2, "name=a,outcome=failed": 2, "name=a,outcome=timeout": 0,
		"name=a,outcome=upstream_down": 0, "name=a,outcome=forbidden": 0}, "obmux_api_requests_total", "name=a")

	// The upstream: what the implementation sent (lifecycle, events, the
	// answers to obmux's get_login_info and a's calls) and received.
	var upIn, upOut mtTally
	upIn.add("lifecycle", sim.Lifecycle(testSelfID, "connect"))
	for _, e := range events {
		upIn.add("event", e)
	}
	for range 1 + 3 {
		select {
		case req := <-up.requests:
			upOut.add("api_request", req)
			upIn.add("api_response", sim.Answer(testSelfID, req))
		case <-ctxT(t).Done():
			t.Fatal("the upstream did not get the calls")
		}
	}
	select {
	case req := <-up.requests:
		t.Errorf("the upstream got an extra frame: %s", req)
	default:
	}
	mtExpect(t, in, mtFrames("upstream", "upstream", upIn.frames, upOut.frames), "obmux_frames_total", "role=upstream")
	mtExpect(t, in, map[string]float64{"direction=in,name=upstream,role=upstream": upIn.bytes,
		"direction=out,name=upstream,role=upstream": upOut.bytes}, "obmux_bytes_total", "role=upstream")
}

// With OBMUX_SLOW_TARGET=drop_oldest, a target that stops reading keeps its
// connection and loses its oldest events, every one counted: what it gets
// after it reads again plus obmux_dropped_frames_total{reason="dropped_oldest"}
// is exactly what was sent, and its backlog never exceeds the queue size.
// The other target gets everything.
func TestMetricsDropOldestCountsDrops(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	a, b := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL,
		"OBMUX_SLOW_TARGET=drop_oldest", "OBMUX_QUEUE_SIZE=10", "OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_PING_INTERVAL=0",
		"OBMUX_WRITE_TIMEOUT=60s")
	up.connected()
	pa, pb := a.accept(), b.accept()
	pa.Pause() // bites at the first event
	sent := flood(t, up, []*sim.Peer{pb}, func() bool {
		return in.metric("obmux_dropped_frames_total", "name=a", "reason=dropped_oldest") > 0
	})
	// b has read every event: obmux has handled them all.
	if q := in.metric("obmux_queue_length", "name=a"); q > 10 {
		t.Errorf("queue_length{name=a} = %v, over OBMUX_QUEUE_SIZE=10", q)
	}
	dropped := int(in.metric("obmux_dropped_frames_total", "name=a", "reason=dropped_oldest"))
	pa.Resume()
	idx := map[string]int{}
	for i, e := range sent {
		idx[string(e)] = i
	}
	last := -1
	for range len(sent) - dropped {
		e := nextEvent(t, pa)
		i, ok := idx[string(e)]
		if !ok || i <= last {
			t.Fatalf("a: event out of order or unknown after #%d: %.100s", last+1, e)
		}
		last = i
	}
	if last != len(sent)-1 {
		t.Errorf("a got %d events and %d were counted dropped, of %d, but its last was #%d: drops miscounted",
			len(sent)-dropped, dropped, len(sent), last+1)
	}
	if got := in.metric("obmux_disconnects_total", "role=target", "name=a"); got != 0 {
		t.Errorf("a was disconnected (%v) under drop_oldest", got)
	}
	mtExpect(t, in, map[string]float64{"direction=out,kind=event,name=a,role=target": float64(len(sent) - dropped)},
		"obmux_frames_total", "name=a", "direction=out", "kind=event")
	t.Logf("%d events of 64 KiB sent, %d dropped for the stuck target", len(sent), dropped)
}

// With the default policy (disconnect), a target that stops reading is
// disconnected with reason queue_overflow and redialed; the other target
// misses nothing. The write timeout is long, so that it cannot end the
// stuck target first (under load, the flood is slower than a 1 s timeout
// was); the close of the stuck connection is cut after the close timeout
// (OBMUX_SHUTDOWN_TIMEOUT).
func TestMetricsStuckTargetDisconnected(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	a, b := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL,
		"OBMUX_QUEUE_SIZE=10", "OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_PING_INTERVAL=0", "OBMUX_WRITE_TIMEOUT=60s",
		"OBMUX_SHUTDOWN_TIMEOUT=1s")
	up.connected()
	pa, pb := a.accept(), b.accept()
	pa.Pause() // bites at the first event
	// Flood until obmux gives up on a: its queue_length series goes.
	flood(t, up, []*sim.Peer{pb}, func() bool { return len(in.series("obmux_queue_length", "name=a")) == 0 })
	eventually(t, "a disconnected for queue_overflow", func() bool {
		return in.metric("obmux_disconnects_total", "role=target", "name=a", "reason=queue_overflow") == 1
	})
	a.accept() // redialed
	eventually(t, "a up again", func() bool {
		return in.metric("obmux_connection_up", "role=target", "name=a") == 1 && in.metric("obmux_connects_total", "role=target", "name=a") == 2
	})
	if got := in.metric("obmux_disconnects_total", "role=target", "name=b"); got != 0 {
		t.Errorf("b was disconnected: %v", got)
	}
	pa.Close()
}

// obmux_connection_up flips 1→0 when a target, a client or the upstream goes
// away; for forward clients it counts the connections on the path.
func TestMetricsUpFlips(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := startForward(t, up, "OBMUX_TARGET_A_URL="+tg.URL)
	tg.accept()
	c1, c2 := dialForward(t, in, "/", nil), dialForward(t, in, "/", nil)
	mtExpect(t, in, map[string]float64{"name=upstream,role=upstream": 1, "name=a,role=target": 1, "name=/,role=client": 2},
		"obmux_connection_up")

	c1.p.Close()
	mtExpect(t, in, map[string]float64{"name=/,role=client": 1}, "obmux_connection_up", "role=client")
	c2.p.Close()
	mtExpect(t, in, map[string]float64{"name=/,role=client": 0}, "obmux_connection_up", "role=client")

	tg.Close() // gone for good: redials are refused
	mtExpect(t, in, map[string]float64{"name=a,role=target": 0}, "obmux_connection_up", "role=target")
	if got := in.metric("obmux_disconnects_total", "role=target", "name=a", "reason=closed_by_peer"); got != 1 {
		t.Errorf("target disconnects closed_by_peer = %v", got)
	}
	up.Close()
	mtExpect(t, in, map[string]float64{"name=upstream,role=upstream": 0}, "obmux_connection_up", "role=upstream")
	for _, c := range []struct {
		role, name string
	}{{"upstream", "upstream"}, {"target", "a"}} {
		if got := in.metric("obmux_connects_total", "role="+c.role, "name="+c.name); got != 1 {
			t.Errorf("connects_total{%s,%s} = %v", c.role, c.name, got)
		}
	}
	if got := in.metric("obmux_connects_total", "role=client", "name=/"); got != 2 {
		t.Errorf("client connects = %v", got)
	}
}

// mtTraffic runs obmux with a target and a forward client and drives every
// kind of traffic through it: events, API calls (answered, failed, 1400),
// heartbeats, pings, a reconnect.
func mtTraffic(t *testing.T) *instance {
	t.Helper()
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	before := time.Now()
	in := startForward(t, up, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_HEARTBEAT_INTERVAL=30ms", "OBMUX_PING_INTERVAL=30ms")
	p := tg.accept()
	c := dialForward(t, in, "/", nil)
	e := event(1)
	up.send(e)
	if got := nextEvent(t, p); !bytes.Equal(got, e) {
		t.Fatalf("got %s", got)
	}
	for _, req := range []string{`{"action":"get_status","echo":1}`, `{"action":"nope","echo":2}`, `not json`} {
		p.Send(ctxT(t), []byte(req))
		nextEvent(t, p)
		c.call(req)
	}
	eventually(t, "heartbeats and ping round trips", func() bool {
		return in.metric("obmux_heartbeats_sent_total", "role=target", "name=a") > 0 &&
			in.metric("obmux_heartbeats_sent_total", "role=client", "name=/") > 0 &&
			in.metric("obmux_ping_rtt_seconds", "role=target", "name=a") > 0 &&
			in.metric("obmux_ping_rtt_seconds", "role=upstream", "name=upstream") > 0
	})
	p.Close() // a disconnect and a redial
	tg.accept()
	if ts := in.metric("obmux_upstream_last_event_timestamp_seconds"); ts < float64(before.Unix()) || ts > float64(time.Now().Unix()+1) {
		t.Errorf("last event timestamp %v, want about now", ts)
	}
	return in
}

// Every metric obmux documents appears in a scrape after traffic, with
// exactly its labels, and shows the traffic; the Go and process collectors
// are there.
func TestMetricsAllNamesPresent(t *testing.T) {
	in := mtTraffic(t)
	mfs := in.metrics()
	for _, m := range []struct {
		name   string
		labels string // label names, sorted
		match  []string
		min    float64 // the value (sum of matching series; a histogram's count) must be at least this
	}{
		{"obmux_connection_up", "name,role", []string{"role=target", "name=a"}, 1},
		{"obmux_connects_total", "name,role", []string{"role=target", "name=a"}, 2},
		{"obmux_disconnects_total", "name,reason,role", []string{"role=target", "name=a", "reason=closed_by_peer"}, 1},
		{"obmux_frames_total", "direction,kind,name,role", []string{"role=client", "name=/", "direction=out", "kind=api_response"}, 3},
		{"obmux_bytes_total", "direction,name,role", []string{"role=upstream", "direction=in"}, 1},
		{"obmux_dropped_frames_total", "name,reason", []string{"name=a", "reason=invalid"}, 1},
		{"obmux_queue_length", "name", []string{"name=a"}, 0},
		{"obmux_api_requests_total", "name,outcome", []string{"name=/", "outcome=failed"}, 2},
		{"obmux_api_request_duration_seconds", "name", []string{"name=a"}, 2},
		{"obmux_ping_rtt_seconds", "name,role", []string{"role=target", "name=a"}, 1e-9},
		{"obmux_heartbeats_sent_total", "name,role", []string{"role=client", "name=/"}, 1},
		{"obmux_upstream_last_event_timestamp_seconds", "", nil, 1},
		{"obmux_build_info", "goversion,version", []string{"version=dev", "goversion=" + runtime.Version()}, 1},
		{"obmux_api_pending_requests", "", nil, 0},
		{"obmux_api_inflight_bytes", "", nil, 0},
		{"obmux_read_budget_used_bytes", "", nil, 0},
		{"obmux_forward_clients_refused_total", "", nil, 0},
		{"obmux_auth_failures_total", "listener,reason", []string{"listener=upstream", "reason=wrong_token"}, 0},
		{"go_goroutines", "", nil, 1},
		{"process_start_time_seconds", "", nil, 1},
	} {
		mf := mfs[m.name]
		if mf == nil {
			t.Errorf("%s is not in the scrape", m.name)
			continue
		}
		for _, s := range mf.Metric {
			var names []string
			for _, lp := range s.Label {
				names = append(names, lp.GetName())
			}
			sort.Strings(names)
			if got := strings.Join(names, ","); got != m.labels {
				t.Errorf("%s has labels {%s}, want {%s}", m.name, got, m.labels)
				break
			}
		}
		series := mtSeries(in, m.name, m.match...)
		if len(series) == 0 {
			t.Errorf("%s has no series %v", m.name, m.match)
			continue
		}
		sum := 0.0
		for _, v := range series {
			sum += v
		}
		if sum < m.min {
			t.Errorf("%s%v = %v, want at least %v", m.name, m.match, sum, m.min)
		}
	}
	if got := in.metric("obmux_build_info"); got != 1 {
		t.Errorf("obmux_build_info sums to %v, want one series of 1", got)
	}
}

// A real scrape after traffic passes promlint without a single problem.
func TestMetricsLint(t *testing.T) {
	in := mtTraffic(t)
	resp, err := http.Get("http://" + in.addrs.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.New(bytes.NewReader(body.Bytes())).Lint()
	if err != nil {
		t.Fatalf("promlint could not read the scrape: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if !bytes.Contains(body.Bytes(), []byte("obmux_frames_total{")) {
		t.Fatalf("the scrape has no obmux metrics:\n%s", body.String())
	}
}
