package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// scenario is one workload run through one relay.
type scenario struct {
	Kind    string  `json:"kind"` // throughput, latency, idle, stuck, filter, format
	Targets int     `json:"targets"`
	Size    int     `json:"event_bytes"`
	Rate    float64 `json:"rate,omitempty"` // events/s; 0 saturates within the window
	Window  int     `json:"window,omitempty"`
	Stuck   int     `json:"stuck_targets,omitempty"`
	Policy  string  `json:"slow_policy,omitempty"` // obmux's OBMUX_SLOW_TARGET
	// Groups, in a filter run, is how many groups each target's
	// OBMUX_TARGET_<NAME>_GROUPS lists (0: no filter, the run it is
	// compared with); Round numbers the alternating pairs of runs.
	Groups int `json:"groups_per_target,omitempty"`
	// Formats, in a format run, gives the targets MESSAGE_FORMAT array
	// and string in turn (false: none, the run it is compared with).
	Formats bool `json:"message_formats,omitempty"`
	Round   int  `json:"round,omitempty"`
	// Events, if > 0, sends exactly that many events (no warm-up) instead of
	// running for Duration after Warmup.
	Events   uint64        `json:"events,omitempty"`
	Warmup   time.Duration `json:"-"`
	Duration time.Duration `json:"-"`
}

func (s scenario) label() string {
	switch s.Kind {
	case "idle":
		return fmt.Sprintf("idle %d targets", s.Targets)
	case "latency":
		return fmt.Sprintf("latency %d targets %s @%s/s", s.Targets, sizeName(s.Size), si(s.Rate))
	case "stuck":
		return fmt.Sprintf("stuck 1 of %d targets %s @%s/s", s.Targets, sizeName(s.Size), si(s.Rate))
	case "filter":
		f := "unfiltered"
		if s.Groups > 0 {
			f = fmt.Sprintf("GROUPS of %d", s.Groups)
		}
		return fmt.Sprintf("filter %d targets %s %s #%d", s.Targets, sizeName(s.Size), f, s.Round)
	case "format":
		f := "as sent"
		if s.Formats {
			f = "array/string"
		}
		return fmt.Sprintf("format %d targets %s %s #%d", s.Targets, sizeName(s.Size), f, s.Round)
	}
	return fmt.Sprintf("throughput %d targets %s", s.Targets, sizeName(s.Size))
}

// result is what one scenario measured through one relay.
type result struct {
	Relay    string   `json:"relay"`
	Scenario scenario `json:"scenario"`
	Label    string   `json:"label"`
	Error    string   `json:"error,omitempty"`

	Sent           uint64  `json:"events_sent"`
	Seconds        float64 `json:"measured_seconds"`
	EventsPerSec   float64 `json:"events_per_sec"` // per healthy target, in the measured window
	FramesPerSec   float64 `json:"frames_per_sec"` // summed over healthy targets
	LatP50us       float64 `json:"latency_p50_us,omitempty"`
	LatP99us       float64 `json:"latency_p99_us,omitempty"`
	LatMaxus       float64 `json:"latency_max_us,omitempty"`
	LatSamples     int     `json:"latency_samples,omitempty"`
	CPUPerMFrames  float64 `json:"cpu_s_per_1e6_frames,omitempty"`
	CPUPercent     float64 `json:"cpu_percent"`
	AllocPerEvent  float64 `json:"alloc_bytes_per_event,omitempty"`
	FaultsPerEvent float64 `json:"minor_faults_per_event,omitempty"`
	PeakRSS        int64   `json:"peak_rss_bytes"` // VmHWM
	RSS            int64   `json:"rss_bytes"`      // VmRSS at the end
	RSSMid         int64   `json:"rss_mid_bytes,omitempty"`

	Lost       uint64 `json:"lost"`         // events a healthy target never got
	Disorder   uint64 `json:"out_of_order"` // events at or below one already received
	Bad        uint64 `json:"bad_frames"`   // neither a whole bench event nor a meta event
	StuckConns int32  `json:"stuck_target_connections,omitempty"`
	SlowLogs   int    `json:"slow_consumer_logs,omitempty"`
}

func (r *result) failed() bool { return r.Error != "" || r.Lost > 0 || r.Disorder > 0 || r.Bad > 0 }

// progressFunc shows a progress line.
type progressFunc func(line string)

// runScenario runs sc through relay and measures it.
func runScenario(ctx context.Context, rel relaySpec, sc scenario, profileDir string, progress progressFunc) (res result) {
	res = result{Relay: rel.name, Scenario: sc, Label: sc.label()}
	fail := func(err error) result {
		res.Error = err.Error()
		return res
	}
	up, err := newUpstream()
	if err != nil {
		return fail(err)
	}
	defer up.close()
	ts, err := newTargets(sc.Targets, sc.Size, sc.Stuck)
	if err != nil {
		return fail(err)
	}
	defer ts.close()
	urls := make([]string, sc.Targets)
	for i := range urls {
		urls[i] = ts.url(i)
	}
	var extra []string
	if sc.Kind != "idle" {
		// Heartbeats would only be skipped by the targets; keepalive
		// stays on (its default), as users run it.
		extra = append(extra, "OBMUX_HEARTBEAT_INTERVAL=0")
	}
	if sc.Policy != "" {
		extra = append(extra, "OBMUX_SLOW_TARGET="+sc.Policy)
	}
	extra = append(extra, groupLists(sc)...)
	fenv, err := formatEnv(sc, ts)
	if err != nil {
		return fail(err)
	}
	extra = append(extra, fenv...)
	child, err := startRelay(rel, up.url, urls, extra, profileDir != "")
	if err != nil {
		return fail(err)
	}
	defer child.stop()

	// Ready: the upstream connection is in and every target connected (and
	// greeted, for obmux: its cursor is attached before the greeting).
	var ws *websocket.Conn
	deadline := time.Now().Add(60 * time.Second)
	for ws == nil || !ready(ts, rel.name == "obmux") {
		if ws == nil {
			select {
			case ws = <-up.conns:
			default:
			}
		}
		if err := child.alive(); err != nil {
			return fail(err)
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("%s not ready after 60s:\n%s", rel.name, child.logTail(10)))
		}
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}

	if sc.Kind == "idle" {
		// Let the connections settle (greetings, first pings, GC).
		select {
		case <-time.After(sc.Duration):
		case <-ctx.Done():
			return fail(ctx.Err())
		}
		s, err := child.sample()
		if err != nil {
			return fail(err)
		}
		res.RSS, res.PeakRSS = s.rss, s.hwm
		return res
	}

	ev, err := newEvent(sc.Size)
	if err != nil {
		return fail(err)
	}
	var sent atomic.Uint64
	quit := make(chan struct{})
	senderDone := make(chan error, 1)
	begin := make(chan struct{})
	go func() {
		<-begin
		senderDone <- send(ws, ev, sc, ts, &sent, quit)
	}()
	begun := sc.Events == 0
	if begun {
		close(begin)
	}

	healthy := ts.list[sc.Stuck:]
	delivered := func() uint64 {
		var n uint64
		for _, t := range healthy {
			n += t.got.Load() - t.lost.Load()
		}
		return n
	}
	wait := func(d time.Duration) error {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			if err := child.alive(); err != nil {
				return err
			}
			select {
			case err := <-senderDone:
				senderDone <- err
				if err != nil {
					return fmt.Errorf("upstream write: %w", err)
				}
				return nil
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(time.Until(end), 250*time.Millisecond)):
			}
			if progress != nil {
				progress(fmt.Sprintf("%s: sent %d, %d frames delivered", rel.name, sent.Load(), delivered()))
			}
		}
		return nil
	}
	defer func() {
		close(quit)
		if !begun {
			close(begin)
		}
		select {
		case <-senderDone:
		case <-time.After(10 * time.Second):
			ws.CloseNow()
			<-senderDone
		}
	}()

	if sc.Events == 0 {
		if err := wait(sc.Warmup); err != nil {
			return fail(err)
		}
	}
	for _, t := range healthy {
		t.latFrom.Store(sent.Load() + 1)
	}
	s0, err := child.sample()
	if err != nil {
		return fail(err)
	}
	a0, err := child.allocBytes()
	if err != nil {
		return fail(err)
	}
	f0 := delivered()
	if !begun {
		close(begin) // count mode measures from the first event
		begun = true
	}
	profDone := make(chan error, 1)
	if profileDir != "" && sc.Events == 0 {
		name := fmt.Sprintf("%s-%s-%dt-%db", rel.name, sc.Kind, sc.Targets, sc.Size)
		if sc.Kind == "filter" {
			name += fmt.Sprintf("-%dg-r%d", sc.Groups, sc.Round) // one profile per run of the pairs
		}
		path := filepath.Join(profileDir, name)
		go func() {
			allocs := make(chan error, 1)
			go func() { allocs <- child.profile("allocs", sc.Duration, path+".allocs.pprof") }()
			err := child.profile("profile", sc.Duration, path+".cpu.pprof")
			profDone <- errors.Join(err, <-allocs)
		}()
	} else {
		profDone <- nil
	}
	if sc.Events == 0 {
		if err := wait(sc.Duration / 2); err != nil {
			return fail(err)
		}
		if s, err := child.sample(); err == nil {
			res.RSSMid = s.rss
		}
		if err := wait(sc.Duration - sc.Duration/2); err != nil {
			return fail(err)
		}
	} else {
		// Count mode: until everything is sent and delivered.
		if err := wait(time.Hour); err != nil {
			return fail(err)
		}
		drain(ts, healthy, sent.Load(), ctx)
	}
	s1, err := child.sample()
	if err != nil {
		return fail(err)
	}
	a1, err := child.allocBytes()
	if err != nil {
		return fail(err)
	}
	f1 := delivered()
	// A scrape of obmux's /metrics allocates too (about 5 KiB per target):
	// one more scrape right away measures that, and it is subtracted.
	a2, err := child.allocBytes()
	if err != nil {
		return fail(err)
	}
	if err := <-profDone; err != nil {
		return fail(fmt.Errorf("profile: %w", err))
	}

	// Stop sending, let everything in flight arrive, then account.
	close(quit)
	quit = make(chan struct{}) // for the deferred close
	if err := <-senderDone; err != nil {
		return fail(fmt.Errorf("upstream write: %w", err))
	}
	senderDone <- nil
	res.Sent = sent.Load()
	drain(ts, healthy, res.Sent, ctx)

	secs := s1.at.Sub(s0.at).Seconds()
	frames := float64(f1 - f0)
	res.Seconds = secs
	res.FramesPerSec = frames / secs
	res.EventsPerSec = res.FramesPerSec / float64(len(healthy))
	cpu := float64(s1.cpuTicks-s0.cpuTicks) / clkTck
	res.CPUPercent = 100 * cpu / secs
	if frames > 0 {
		res.CPUPerMFrames = cpu / (frames / 1e6)
		res.AllocPerEvent = max(a1-a0-(a2-a1), 0) / (frames / float64(len(healthy)))
		res.FaultsPerEvent = float64(s1.minflt-s0.minflt) / (frames / float64(len(healthy)))
	}
	res.RSS, res.PeakRSS = s1.rss, s1.hwm
	var lat []int64
	for _, t := range healthy {
		missing := res.Sent - min(res.Sent, t.got.Load()) + t.lost.Load()
		res.Lost += missing
		res.Disorder += t.disorder.Load()
		res.Bad += t.bad.Load()
		t.latMu.Lock()
		lat = append(lat, t.latencies...)
		t.latMu.Unlock()
	}
	for _, t := range ts.list[:sc.Stuck] {
		res.StuckConns += t.connects.Load()
	}
	res.SlowLogs = child.countLog("slow consumer")
	if sc.Rate > 0 && len(lat) > 0 {
		slices.Sort(lat)
		q := func(p float64) float64 { return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)]) / 1e3 }
		res.LatP50us, res.LatP99us, res.LatMaxus, res.LatSamples = q(0.50), q(0.99), float64(lat[len(lat)-1])/1e3, len(lat)
	}
	return res
}

func ready(ts *targets, greeted bool) bool {
	for _, t := range ts.list {
		if t.connects.Load() == 0 {
			return false
		}
		if greeted {
			select {
			case <-t.greeted:
			default:
				return false
			}
		}
	}
	return true
}

// drain waits until every healthy target has seq n, or nothing arrived for
// 5 s.
func drain(ts *targets, healthy []*target, n uint64, ctx context.Context) {
	last, lastChange := uint64(0), time.Now()
	for ctx.Err() == nil {
		m, sum := ^uint64(0), uint64(0)
		for _, t := range healthy {
			g := t.got.Load()
			m = min(m, g)
			sum += g
		}
		if m >= n {
			return
		}
		if sum != last {
			last, lastChange = sum, time.Now()
		} else if time.Since(lastChange) > 5*time.Second {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// send is the upstream's sender: events stamped with their seq and send time,
// at sc.Rate or, saturating, as fast as the slowest healthy target is within
// sc.Window events.
func send(ws *websocket.Conn, ev *event, sc scenario, ts *targets, sent *atomic.Uint64, quit <-chan struct{}) error {
	var low uint64
	var interval time.Duration
	if sc.Rate > 0 {
		interval = time.Duration(float64(time.Second) / sc.Rate)
	}
	start := time.Now()
	for seq := uint64(1); sc.Events == 0 || seq <= sc.Events; seq++ {
		select {
		case <-quit:
			return nil
		default:
		}
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(seq-1) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		if sc.Window > 0 {
			ts.waitWindow(seq, sc.Window, &low, quit)
		}
		ev.stamp(seq, time.Now().UnixNano())
		if err := ws.Write(context.Background(), websocket.MessageText, ev.buf); err != nil {
			return err
		}
		sent.Store(seq)
	}
	return nil
}

// groupLists returns, for a filter run with Groups, each target's
// OBMUX_TARGET_<NAME>_GROUPS: a different list of sc.Groups groups per
// target, each holding the bench event's group (so that every target still
// gets, and checks, every event) among others of its own, so that every
// target runs its own check on every event.
func groupLists(sc scenario) []string {
	if sc.Kind != "filter" || sc.Groups == 0 {
		return nil
	}
	var env []string
	for i := range sc.Targets {
		list := []string{strconv.Itoa(eventGroup)}
		for k := 1; k < sc.Groups; k++ {
			list = append(list, strconv.Itoa(100000+i*1000+k))
		}
		env = append(env, fmt.Sprintf("OBMUX_TARGET_%s_GROUPS=%s", targetName(i), strings.Join(list, ",")))
	}
	return env
}

// formatEnv returns, for a format run with Formats, each target's
// OBMUX_TARGET_<NAME>_MESSAGE_FORMAT: array and string in turn. The bench
// events are arrays, so the string targets get another frame, of the size
// it tells them to expect, made by the same conversion obmux runs.
func formatEnv(sc scenario, ts *targets) ([]string, error) {
	if sc.Kind != "format" || !sc.Formats {
		return nil, nil
	}
	size, err := stringEventSize(sc.Size)
	if err != nil {
		return nil, err
	}
	var env []string
	for i := range sc.Targets {
		f := "array"
		if i%2 == 1 {
			f = "string"
			ts.list[i].size = size
		}
		env = append(env, fmt.Sprintf("OBMUX_TARGET_%s_MESSAGE_FORMAT=%s", targetName(i), f))
	}
	return env, nil
}
