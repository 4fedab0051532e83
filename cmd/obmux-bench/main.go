// Command obmux-bench measures obmux against a baseline relay on 127.0.0.1.
//
// It runs a simulated OneBot implementation (a forward-WS server sending
// NapCat-shaped group-message events, each stamped with a sequence number and
// its send time), N simulated frameworks (reverse-WS servers that read every
// frame, check order and completeness and record latency), and between them
// the relay under test as a child process configured by environment as a user
// would: the real obmux binary, or the baseline, the simplest correct relay
// written with coder/websocket (one reader, one writer goroutine per target),
// which is this executable re-executed.
//
// Usage:
//
//	go run ./cmd/obmux-bench [flags]
//
// Without flags it runs the standard suite (about a minute) and prints a
// table; -json prints the results for machines. -run soak (hostile peers
// beside healthy targets) and -run hold (1000 idle targets and 1000 idle
// forward-WS clients at the default keepalive: obmux's CPU and RSS) are not
// in the standard suite. It exits 1 when any healthy
// target lost an event or got one out of order, or a run failed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"
)

func main() {
	if os.Getenv(baselineEnv) == "1" {
		os.Exit(runBaseline())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(benchMain(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line flags.
type options struct {
	obmux      string
	relays     []string
	only       map[string]bool
	targets    []int
	sizes      []int
	duration   time.Duration
	warmup     time.Duration
	window     int
	events     uint64
	rate       float64
	latTargets int
	latSize    int
	latDur     time.Duration
	idle       int
	idleSettle time.Duration
	hTargets   int
	hClients   int
	hDur       time.Duration
	stuckDur   time.Duration
	policies   []string
	fTargets   int
	fSizes     []int
	fGroups    int
	fRounds    int
	sTargets   int
	sRounds    int
	json       bool
	profile    string
	progress   bool
	obmuxEnv   []string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("obmux-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	var relays, only, targets, sizes, policies, fSizes string
	fs.StringVar(&o.obmux, "obmux", "", "obmux binary to measure (default: go build ./cmd/obmux into a temporary directory)")
	fs.StringVar(&relays, "relays", "obmux,baseline", "relays to run, in order: obmux, baseline, obmux-nats (an account-side obmux publishing to an embedded NATS JetStream server and an edge obmux serving the targets from it; throughput and latency only)")
	fs.StringVar(&only, "run", "throughput,latency,idle,stuck,filter,format", "scenario kinds to run")
	fs.StringVar(&targets, "targets", "1,10,100", "throughput: target counts")
	fs.StringVar(&sizes, "sizes", "300,16KiB,1MiB", "throughput: event sizes (bytes, or with KiB/MiB)")
	fs.DurationVar(&o.duration, "duration", 1500*time.Millisecond, "throughput: measured time per run")
	fs.DurationVar(&o.warmup, "warmup", 300*time.Millisecond, "time before measuring (throughput, latency, stuck)")
	fs.IntVar(&o.window, "window", 0, "throughput: events in flight beyond the slowest target (0: 16 MiB worth, 4 to 512)")
	fs.Uint64Var(&o.events, "events", 0, "throughput: send exactly this many events instead of running for -duration")
	fs.Float64Var(&o.rate, "rate", 10000, "latency and stuck: events per second")
	fs.IntVar(&o.latTargets, "latency-targets", 10, "latency and stuck: targets")
	fs.IntVar(&o.latSize, "latency-size", 300, "latency and stuck: event size in bytes")
	fs.DurationVar(&o.latDur, "latency-duration", 2*time.Second, "latency: measured time")
	fs.IntVar(&o.idle, "idle", 1000, "idle: targets (compared with 1)")
	fs.DurationVar(&o.idleSettle, "idle-settle", 1500*time.Millisecond, "idle: time between all connected and the RSS reading")
	fs.IntVar(&o.hTargets, "hold-targets", 1000, "hold (not in the default -run): idle targets obmux holds")
	fs.IntVar(&o.hClients, "hold-clients", 1000, "hold: idle forward-WS clients obmux holds beside them")
	fs.DurationVar(&o.hDur, "hold-duration", 20*time.Second, "hold: measured time (default one ping interval), after -idle-settle")
	fs.DurationVar(&o.stuckDur, "stuck-duration", 3*time.Second, "stuck: measured time")
	fs.StringVar(&policies, "stuck-policies", "disconnect,drop_oldest", "stuck: obmux's OBMUX_SLOW_TARGET values to run")
	fs.IntVar(&o.fTargets, "filter-targets", 10, "filter and format: targets, each with its own OBMUX_TARGET_<NAME>_GROUPS list (filter) or, alternately, MESSAGE_FORMAT array and string (format)")
	fs.StringVar(&fSizes, "filter-sizes", "300,16KiB", "filter and format: event sizes")
	fs.IntVar(&o.fGroups, "filter-groups", 16, "filter: groups in each target's list (one of them the events' group, so every event still reaches every target)")
	fs.IntVar(&o.fRounds, "filter-rounds", 3, "filter and format: alternating pairs of runs (plain, then filtered or with formats) per size; the table shows each pair's ratio and their median")
	fs.IntVar(&o.sTargets, "soak-targets", 10, "soak (not in the default -run): healthy targets, 300-byte events")
	fs.IntVar(&o.sRounds, "soak-rounds", 2, "soak: alternating pairs of runs (quiet, then with the hostile peers of issue 13 beside the targets)")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&o.profile, "profile", "", "write profiles of each relay per measured run into this directory: CPU and allocations (of a hold run too), heap and goroutines of an idle one (obmux is built from ./cmd/obmux with a pprof overlay, so not with -obmux)")
	fs.BoolVar(&o.progress, "progress", true, "show a progress line on stderr")
	var obmuxEnv string
	fs.StringVar(&obmuxEnv, "obmux-env", "", "extra environment for obmux only, KEY=value,... (e.g. GOGC=200 or OBMUX_REPLAY_BYTES=0, for experiments)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.relays = splitList(relays)
	for _, r := range o.relays {
		if r != "obmux" && r != "baseline" && r != natsRelay {
			return nil, fmt.Errorf("-relays: unknown relay %q (obmux, baseline, %s)", r, natsRelay)
		}
	}
	o.only = map[string]bool{}
	for _, k := range splitList(only) {
		switch k {
		case "throughput", "latency", "idle", "stuck", "filter", "format", "soak", "hold":
			o.only[k] = true
		default:
			return nil, fmt.Errorf("-run: unknown scenario kind %q (throughput, latency, idle, stuck, filter, format, soak, hold)", k)
		}
	}
	for _, s := range splitList(targets) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-targets: bad count %q", s)
		}
		o.targets = append(o.targets, n)
	}
	for _, s := range splitList(sizes) {
		n, err := parseSize(s)
		if err != nil {
			return nil, fmt.Errorf("-sizes: %w", err)
		}
		if n < minEventSize {
			return nil, fmt.Errorf("-sizes: %d is below the smallest event (%d bytes)", n, minEventSize)
		}
		o.sizes = append(o.sizes, n)
	}
	for _, s := range splitList(fSizes) {
		n, err := parseSize(s)
		if err != nil || n < minEventSize {
			return nil, fmt.Errorf("-filter-sizes: bad size %q (at least %d bytes)", s, minEventSize)
		}
		o.fSizes = append(o.fSizes, n)
	}
	if o.fTargets < 1 || o.fGroups < 1 || o.fRounds < 1 {
		return nil, errors.New("-filter-targets, -filter-groups and -filter-rounds must be at least 1")
	}
	if o.latSize < minEventSize {
		return nil, fmt.Errorf("-latency-size: %d is below the smallest event (%d bytes)", o.latSize, minEventSize)
	}
	if o.profile != "" && o.obmux != "" {
		return nil, errors.New("-profile builds obmux from ./cmd/obmux with a pprof listener added; it cannot profile the -obmux binary")
	}
	o.policies = splitList(policies)
	o.obmuxEnv = splitList(obmuxEnv)
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "MiB"):
		mult, s = 1<<20, strings.TrimSuffix(s, "MiB")
	case strings.HasSuffix(s, "KiB"):
		mult, s = 1<<10, strings.TrimSuffix(s, "KiB")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// window is the in-flight bound of a saturating run: 16 MiB worth of events,
// at least 4 and at most 512 (obmux's defaults allow 1024 events and 64 MiB).
func (o *options) windowFor(size int) int {
	if o.window > 0 {
		return o.window
	}
	return min(max((16<<20)/size, 4), 512)
}

// suite lists the runs: each scenario through every relay, back to back, so
// that both see the same background load.
func (o *options) suite() []scenario {
	var s []scenario
	if o.only["throughput"] {
		for _, n := range o.targets {
			for _, size := range o.sizes {
				s = append(s, scenario{Kind: "throughput", Targets: n, Size: size, Window: o.windowFor(size),
					Events: o.events, Warmup: o.warmup, Duration: o.duration})
			}
		}
	}
	if o.only["latency"] {
		s = append(s, scenario{Kind: "latency", Targets: o.latTargets, Size: o.latSize, Rate: o.rate, Warmup: o.warmup, Duration: o.latDur})
	}
	if o.only["idle"] {
		s = append(s, scenario{Kind: "idle", Targets: 1, Duration: o.idleSettle})
		if o.idle > 1 {
			s = append(s, scenario{Kind: "idle", Targets: o.idle, Duration: o.idleSettle})
		}
	}
	if o.only["hold"] {
		s = append(s, scenario{Kind: "hold", Targets: o.hTargets, Clients: o.hClients, Warmup: o.idleSettle, Duration: o.hDur})
	}
	if o.only["filter"] {
		// Unfiltered and filtered alternate, so that both see the same
		// background load.
		for _, size := range o.fSizes {
			for round := 1; round <= o.fRounds; round++ {
				for _, groups := range []int{0, o.fGroups} {
					s = append(s, scenario{Kind: "filter", Targets: o.fTargets, Size: size, Window: o.windowFor(size), Groups: groups,
						Round: round, Events: o.events, Warmup: o.warmup, Duration: o.duration})
				}
			}
		}
	}
	if o.only["format"] {
		// As filter: without and with formats, alternating.
		for _, size := range o.fSizes {
			for round := 1; round <= o.fRounds; round++ {
				for _, formats := range []bool{false, true} {
					s = append(s, scenario{Kind: "format", Targets: o.fTargets, Size: size, Window: o.windowFor(size), Formats: formats,
						Round: round, Events: o.events, Warmup: o.warmup, Duration: o.duration})
				}
			}
		}
	}
	if o.only["soak"] {
		// Quiet and hostile alternate, as filter's pairs do.
		for round := 1; round <= o.sRounds; round++ {
			for _, hostile := range []bool{false, true} {
				s = append(s, scenario{Kind: "soak", Targets: o.sTargets, Size: 300, Window: o.windowFor(300), Hostile: hostile,
					Round: round, Events: o.events, Warmup: o.warmup, Duration: o.duration})
			}
		}
	}
	if o.only["stuck"] {
		for _, p := range o.policies {
			s = append(s, scenario{Kind: "stuck", Targets: o.latTargets, Size: o.latSize, Rate: o.rate, Stuck: 1, Policy: p,
				Warmup: o.warmup, Duration: o.stuckDur})
		}
	}
	return s
}

// report is the whole output.
type report struct {
	Command string   `json:"command"`
	Started string   `json:"started"`
	GoVer   string   `json:"go"`
	CPUs    int      `json:"cpus"`
	Results []result `json:"results"`
	Failed  bool     `json:"failed"`
}

func benchMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintln(stderr, "obmux-bench:", err)
		return 2
	}
	rep, err := runSuite(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "obmux-bench:", err)
		return 1
	}
	rep.Command = strings.Join(append([]string{"obmux-bench"}, args...), " ")
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		printTable(stdout, rep)
	}
	if rep.Failed {
		return 1
	}
	return 0
}

func runSuite(ctx context.Context, o *options, stderr io.Writer) (*report, error) {
	rep := &report{Started: time.Now().UTC().Format(time.RFC3339), GoVer: runtime.Version(), CPUs: runtime.NumCPU()}
	tmp, err := os.MkdirTemp("", "obmux-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return nil, err
		}
	}
	specs := map[string]relaySpec{}
	for _, r := range o.relays {
		switch r {
		case "obmux", natsRelay:
			path := o.obmux
			if built, ok := specs["built"]; ok {
				path = built.path
			} else if path == "" {
				fmt.Fprintln(stderr, "obmux-bench: building ./cmd/obmux")
				if path, err = buildObmux(tmp, o.profile != ""); err != nil {
					return nil, err
				}
				specs["built"] = relaySpec{path: path}
			}
			specs[r] = relaySpec{name: r, path: path, env: o.obmuxEnv, dir: tmp}
		case "baseline":
			self, err := os.Executable()
			if err != nil {
				return nil, err
			}
			specs[r] = relaySpec{name: r, path: self, env: []string{baselineEnv + "=1"}}
		}
	}
	type job struct {
		sc    scenario
		relay string
	}
	var jobs []job
	for _, sc := range o.suite() {
		for _, r := range o.relays {
			run := sc
			if (sc.Kind == "filter" || sc.Kind == "format" || sc.Kind == "soak" || sc.Kind == "hold") && r != "obmux" {
				continue // obmux against itself: the baseline has no filters, formats nor forward-WS server
			}
			if r == natsRelay && sc.Kind != "throughput" && sc.Kind != "latency" {
				continue
			}
			if sc.Kind == "stuck" && r == "baseline" {
				if sc.Policy != o.policies[0] {
					continue // the baseline has one policy
				}
				run.Policy = ""
			}
			jobs = append(jobs, job{run, r})
		}
	}
	onTerminal := false
	if f, ok := stderr.(*os.File); ok {
		onTerminal = term.IsTerminal(int(f.Fd()))
	}
	for i, j := range jobs {
		head := fmt.Sprintf("[%2d/%d] %-8s %s", i+1, len(jobs), j.relay, j.sc.label())
		show := func(line string) {
			if o.progress && onTerminal {
				fmt.Fprintf(stderr, "\r\033[K%s  %s", head, line)
			}
		}
		show("starting")
		res := runScenario(ctx, specs[j.relay], j.sc, o.profile, show)
		if o.progress {
			if onTerminal {
				fmt.Fprint(stderr, "\r\033[K")
			}
			fmt.Fprintf(stderr, "%s  %s\n", head, summary(res))
		}
		if res.failed() {
			rep.Failed = true
			if res.Error != "" {
				fmt.Fprintf(stderr, "obmux-bench: %s %s: %s\n", j.relay, res.Label, res.Error)
			}
		}
		rep.Results = append(rep.Results, res)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	return rep, nil
}

func summary(r result) string {
	switch {
	case r.Error != "":
		return "error"
	case r.Scenario.Kind == "idle":
		return "RSS " + mib(r.RSS)
	case r.Scenario.Rate > 0:
		return fmt.Sprintf("p99 %.0f µs, lost %d", r.LatP99us, r.Lost)
	}
	return fmt.Sprintf("%s ev/s, lost %d", si(r.EventsPerSec), r.Lost)
}
