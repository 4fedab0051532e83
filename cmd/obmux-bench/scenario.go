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

	"github.com/obmux/obmux/internal/sim"
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
	// Hostile, in a soak run, sets the hostile peers of issue 13 on
	// obmux's listeners beside the targets (false: none, the run it is
	// compared with).
	Hostile bool `json:"hostile,omitempty"`
	Round   int  `json:"round,omitempty"`
	// Clients, in a hold run, is how many idle forward-WS clients obmux
	// holds beside its Targets.
	Clients int `json:"forward_clients,omitempty"`
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
	case "hold":
		return fmt.Sprintf("hold %d targets %d forward clients", s.Targets, s.Clients)
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
	case "soak":
		f := "quiet"
		if s.Hostile {
			f = "hostile peers"
		}
		return fmt.Sprintf("soak %d targets %s %s #%d", s.Targets, sizeName(s.Size), f, s.Round)
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
	// Hostile says what the hostile peers of a soak run did.
	Hostile string `json:"hostile_peers,omitempty"`
	// Heartbeats, in a hold run, is how many meta events the targets and
	// forward clients got in the measured time.
	Heartbeats uint64 `json:"heartbeats_received,omitempty"`
}

func (r *result) failed() bool { return r.Error != "" || r.Lost > 0 || r.Disorder > 0 || r.Bad > 0 }

// progressFunc shows a progress line.
type progressFunc func(line string)

// runScenario runs sc through relay and measures it.
func runScenario(ctx context.Context, rel relaySpec, sc scenario, profileDir string, progress progressFunc) (res result) {
	res = result{Relay: rel.name, Scenario: sc, Label: sc.label()}
	r := &run{ctx: ctx, rel: rel, sc: sc, profileDir: profileDir, progress: progress}
	defer r.cleanUp()
	err := r.start()
	switch {
	case err != nil:
	case sc.Kind == "idle":
		err = r.idle(&res)
	case sc.Kind == "hold":
		err = r.hold(&res)
	default:
		err = r.measure(&res)
	}
	if err != nil {
		res.Error = err.Error()
	}
	if r.floods != nil {
		r.soakResult(&res)
	}
	return res
}

// soakResult adds what the hostile peers did to res, and fails it when
// obmux's peak RSS went over the soak's bound.
func (r *run) soakResult(res *result) {
	r.floods.stop()
	res.Hostile = r.floods.String()
	if res.Error == "" && res.PeakRSS > soakBound() {
		res.Error = fmt.Sprintf("peak RSS %s with hostile peers, over the bound of %s (2 x OBMUX_QUEUE_BYTES + 64 MiB)",
			mib(res.PeakRSS), mib(soakBound()))
	}
}

// run is one scenario's run through one relay: the simulated upstream and
// targets, the relay's process, the upstream's sender, and what runs at the
// end (cleanups, last first).
type run struct {
	ctx        context.Context
	rel        relaySpec
	sc         scenario
	profileDir string // profiles go there ("": none)
	progress   progressFunc
	cleanups   []func()

	up      *upstream
	ts      *targets
	healthy []*target // the targets that are not stuck
	child   *relayChild
	ws      *websocket.Conn // the relay's upstream connection
	fwd     string          // obmux's forward-WS listener, in a soak run
	floods  *floods         // the hostile peers of a soak run, if any

	sent       atomic.Uint64
	quit       chan struct{} // closed to stop the sender
	senderDone chan error    // the sender's result (put back by whoever reads it)
	begin      chan struct{} // closed to start the sender
	begun      bool
}

// cleanUp runs the cleanups, last first.
func (r *run) cleanUp() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// start starts the simulated peers and the relay, and waits until the relay
// is connected to all of them.
func (r *run) start() error {
	sc := r.sc
	up, err := newUpstream()
	if err != nil {
		return err
	}
	r.up = up
	r.cleanups = append(r.cleanups, up.Close)
	ts, err := newTargets(sc.Targets, sc.Size, sc.Stuck)
	if err != nil {
		return err
	}
	r.ts, r.healthy = ts, ts.list[sc.Stuck:]
	r.cleanups = append(r.cleanups, ts.close)
	urls := make([]string, sc.Targets)
	for i := range urls {
		urls[i] = ts.url(i)
	}
	extra, err := r.relayEnv()
	if err != nil {
		return err
	}
	if r.rel.name == natsRelay {
		if err := r.startNATSRelay(urls, extra); err != nil {
			return err
		}
		return r.waitReady()
	}
	child, err := startRelay(r.rel, up.URL, urls, extra, r.profileDir != "")
	if err != nil {
		return err
	}
	r.child = child
	r.cleanups = append(r.cleanups, child.stop)
	if err := r.waitReady(); err != nil {
		return err
	}
	if sc.Hostile {
		r.floods = startFloods(r.fwd, child.metrics) // during the warm-up and the measured time
		r.cleanups = append(r.cleanups, r.floods.stop)
		return r.floods.underWay(r.ctx)
	}
	return nil
}

// relayEnv is the scenario's own environment for the relay.
func (r *run) relayEnv() ([]string, error) {
	sc := r.sc
	var extra []string
	if sc.Kind != "idle" && sc.Kind != "hold" {
		// Heartbeats would only be skipped by the targets; keepalive
		// stays on (its default), as users run it.
		extra = append(extra, "OBMUX_HEARTBEAT_INTERVAL=0")
	}
	if sc.Policy != "" {
		extra = append(extra, "OBMUX_SLOW_TARGET="+sc.Policy)
	}
	extra = append(extra, groupLists(sc)...)
	fenv, err := formatEnv(sc, r.ts)
	if err != nil {
		return nil, err
	}
	if sc.Kind == "soak" {
		if r.fwd, err = sim.FreeAddr(); err != nil {
			return nil, err
		}
		extra = append(extra, soakEnv(r.fwd)...)
	}
	if sc.Kind == "hold" {
		if r.fwd, err = freeForward(); err != nil {
			return nil, err
		}
		extra = append(extra, holdEnv(r.fwd, sc.Clients)...)
	}
	return append(extra, fenv...), nil
}

// waitReady waits until the upstream connection is in and every target
// connected (and greeted, for obmux: its cursor is attached before the
// greeting).
func (r *run) waitReady() error {
	deadline := time.Now().Add(60 * time.Second)
	for r.ws == nil || !ready(r.ts, strings.HasPrefix(r.rel.name, "obmux")) {
		if r.ws == nil {
			select {
			case r.ws = <-r.up.conns:
			default:
			}
		}
		if err := r.child.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 60s:\n%s", r.rel.name, r.child.logTail(10))
		}
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// idle lets the connections settle (greetings, first pings, GC) and samples
// the relay's memory.
func (r *run) idle(res *result) error {
	select {
	case <-time.After(r.sc.Duration):
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	s, err := r.child.sample()
	if err != nil {
		return err
	}
	res.RSS, res.PeakRSS = s.rss, s.hwm
	return r.idleProfiles()
}

// idleProfiles saves the idle relay's heap and goroutines when profiles
// are asked for: where an idle connection's memory is. First the heap's
// text form, which ends with the runtime's MemStats as they were at the
// RSS reading (stacks, heap in use, idle and released), then the live heap
// after a GC (without one, a heap profile shows the heap as of the last GC,
// which may predate most connections) and the goroutines.
func (r *run) idleProfiles() error {
	if r.profileDir == "" {
		return nil
	}
	path := filepath.Join(r.profileDir, fmt.Sprintf("%s-idle-%dt", r.rel.name, r.sc.Targets))
	for _, p := range []struct{ query, file string }{
		{"heap?debug=1", ".heap.txt"}, {"heap?gc=1", ".heap.pprof"}, {"goroutine", ".goroutine.pprof"},
	} {
		if err := r.child.fetchProfile(p.query, path+p.file); err != nil {
			return fmt.Errorf("%s profile: %w", p.query, err)
		}
	}
	return nil
}

// startSender starts the upstream's sender, held until begin is closed
// (at once in time mode, after the first sample in count mode).
func (r *run) startSender() error {
	ev, err := newEvent(r.sc.Size)
	if err != nil {
		return err
	}
	r.quit = make(chan struct{})
	r.senderDone = make(chan error, 1)
	r.begin = make(chan struct{})
	go func(quit <-chan struct{}) {
		<-r.begin
		r.senderDone <- send(r.ws, ev, r.sc, r.ts, &r.sent, quit)
	}(r.quit)
	r.begun = r.sc.Events == 0
	if r.begun {
		close(r.begin)
	}
	r.cleanups = append(r.cleanups, r.stopSender)
	return nil
}

// stopSender stops the sender at the end of the run, cutting the
// connection if its write is stuck.
func (r *run) stopSender() {
	close(r.quit)
	if !r.begun {
		close(r.begin)
	}
	select {
	case <-r.senderDone:
	case <-time.After(10 * time.Second):
		r.ws.CloseNow()
		<-r.senderDone
	}
}

// delivered returns the events the healthy targets received, in all.
func (r *run) delivered() uint64 {
	var n uint64
	for _, t := range r.healthy {
		n += t.got.Load() - t.lost.Load()
	}
	return n
}

// wait lets the run go on for d (until the sender ends, in count mode),
// reporting progress and failing when the relay dies.
func (r *run) wait(d time.Duration) error {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := r.child.alive(); err != nil {
			return err
		}
		select {
		case err := <-r.senderDone:
			r.senderDone <- err
			if err != nil {
				return fmt.Errorf("upstream write: %w", err)
			}
			return nil
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-time.After(min(time.Until(end), 250*time.Millisecond)):
		}
		if r.progress != nil {
			r.progress(fmt.Sprintf("%s: sent %d, %d frames delivered", r.rel.name, r.sent.Load(), r.delivered()))
		}
	}
	return nil
}

// mark is the relay's counters at one moment of a run.
type mark struct {
	proc      procSample
	alloc     float64 // bytes allocated by the relay so far
	delivered uint64
}

// mark samples the relay and the targets.
func (r *run) mark() (mark, error) {
	s, err := r.child.sample()
	if err != nil {
		return mark{}, err
	}
	a, err := r.child.allocBytes()
	if err != nil {
		return mark{}, err
	}
	return mark{s, a, r.delivered()}, nil
}

// measure runs a loaded scenario: warm-up, the measured window between two
// marks (profiled if asked), then everything in flight delivered and
// accounted into res.
func (r *run) measure(res *result) error {
	sc := r.sc
	if err := r.startSender(); err != nil {
		return err
	}
	if sc.Events == 0 {
		if err := r.wait(sc.Warmup); err != nil {
			return err
		}
	}
	for _, t := range r.healthy {
		t.latFrom.Store(r.sent.Load() + 1)
	}
	m0, err := r.mark()
	if err != nil {
		return err
	}
	if !r.begun {
		close(r.begin) // count mode measures from the first event
		r.begun = true
	}
	profDone := r.startProfile()
	if err := r.window(res); err != nil {
		return err
	}
	m1, err := r.mark()
	if err != nil {
		return err
	}
	// A scrape of obmux's /metrics allocates too (about 5 KiB per target):
	// one more scrape right away measures that, and it is subtracted.
	a2, err := r.child.allocBytes()
	if err != nil {
		return err
	}
	if err := <-profDone; err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	if err := r.finishSending(res); err != nil {
		return err
	}
	r.account(res, m0, m1, a2)
	return nil
}

// startProfile takes the relay's CPU and allocation profiles over the
// window, in time mode when profiles are asked for; the channel gets their
// result.
func (r *run) startProfile() <-chan error {
	sc := r.sc
	profDone := make(chan error, 1)
	if r.profileDir == "" || sc.Events != 0 {
		profDone <- nil
		return profDone
	}
	name := fmt.Sprintf("%s-%s-%dt-%db", r.rel.name, sc.Kind, sc.Targets, sc.Size)
	if sc.Kind == "filter" {
		name += fmt.Sprintf("-%dg-r%d", sc.Groups, sc.Round) // one profile per run of the pairs
	}
	if sc.Kind == "soak" {
		name += fmt.Sprintf("-hostile=%v-r%d", sc.Hostile, sc.Round)
	}
	path := filepath.Join(r.profileDir, name)
	go func() {
		allocs := make(chan error, 1)
		go func() { allocs <- r.child.profile("allocs", sc.Duration, path+".allocs.pprof") }()
		err := r.child.profile("profile", sc.Duration, path+".cpu.pprof")
		profDone <- errors.Join(err, <-allocs)
	}()
	return profDone
}

// window is the measured part of the run: sc.Duration (with a memory
// sample half way), or in count mode until every event is sent and
// delivered.
func (r *run) window(res *result) error {
	sc := r.sc
	if sc.Events != 0 {
		if err := r.wait(time.Hour); err != nil {
			return err
		}
		drain(r.ts, r.healthy, r.sent.Load(), r.ctx)
		return nil
	}
	if err := r.wait(sc.Duration / 2); err != nil {
		return err
	}
	if s, err := r.child.sample(); err == nil {
		res.RSSMid = s.rss
	}
	return r.wait(sc.Duration - sc.Duration/2)
}

// finishSending stops the sender and lets everything in flight arrive.
func (r *run) finishSending(res *result) error {
	close(r.quit)
	r.quit = make(chan struct{}) // for stopSender
	if err := <-r.senderDone; err != nil {
		return fmt.Errorf("upstream write: %w", err)
	}
	r.senderDone <- nil
	res.Sent = r.sent.Load()
	drain(r.ts, r.healthy, res.Sent, r.ctx)
	return nil
}

// account fills res from the marks around the window (a2: the allocation
// count right after m1's, which a scrape costs) and from the targets.
func (r *run) account(res *result, m0, m1 mark, a2 float64) {
	s0, s1 := m0.proc, m1.proc
	healthy := float64(len(r.healthy))
	secs := s1.at.Sub(s0.at).Seconds()
	frames := float64(m1.delivered - m0.delivered)
	res.Seconds = secs
	res.FramesPerSec = frames / secs
	res.EventsPerSec = res.FramesPerSec / healthy
	cpu := float64(s1.cpuTicks-s0.cpuTicks) / clkTck
	res.CPUPercent = 100 * cpu / secs
	if frames > 0 {
		res.CPUPerMFrames = cpu / (frames / 1e6)
		res.AllocPerEvent = max(m1.alloc-m0.alloc-(a2-m1.alloc), 0) / (frames / healthy)
		res.FaultsPerEvent = float64(s1.minflt-s0.minflt) / (frames / healthy)
	}
	res.RSS, res.PeakRSS = s1.rss, s1.hwm
	var lat []int64
	for _, t := range r.healthy {
		missing := res.Sent - min(res.Sent, t.got.Load()) + t.lost.Load()
		res.Lost += missing
		res.Disorder += t.disorder.Load()
		res.Bad += t.bad.Load()
		t.latMu.Lock()
		lat = append(lat, t.latencies...)
		t.latMu.Unlock()
	}
	for _, t := range r.ts.list[:r.sc.Stuck] {
		res.StuckConns += t.connects.Load()
	}
	res.SlowLogs = r.child.countLog("slow consumer")
	if r.sc.Rate > 0 && len(lat) > 0 {
		slices.Sort(lat)
		q := func(p float64) float64 { return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)]) / 1e3 }
		res.LatP50us, res.LatP99us, res.LatMaxus, res.LatSamples = q(0.50), q(0.99), float64(lat[len(lat)-1])/1e3, len(lat)
	}
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
