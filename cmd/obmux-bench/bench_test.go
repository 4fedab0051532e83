package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/obmux/obmux/config"
	"github.com/obmux/obmux/onebot"
)

func TestMain(m *testing.M) {
	// The bench re-executes itself (here: this test binary) as the
	// baseline relay.
	if os.Getenv(baselineEnv) == "1" {
		os.Exit(runBaseline())
	}
	goleak.VerifyTestMain(m)
}

func TestEventLayout(t *testing.T) {
	for _, size := range []int{minEventSize, 300, 301, 2047, 2048, 16 << 10, 1 << 20} {
		e, err := newEvent(size)
		if err != nil {
			t.Fatal(err)
		}
		e.stamp(123456789, 1700000000123456789)
		if len(e.buf) != size {
			t.Fatalf("size %d: got %d bytes", size, len(e.buf))
		}
		if !json.Valid(e.buf) {
			t.Fatalf("size %d: not JSON: %s", size, e.buf[:min(len(e.buf), 400)])
		}
		seq, ts, ok := parseHeader(e.buf[:min(len(e.buf), headerLen)])
		if !ok || seq != 123456789 || ts != 1700000000123456789 {
			t.Fatalf("size %d: parsed %d %d %v", size, seq, ts, ok)
		}
		var ev struct {
			PostType    string `json:"post_type"`
			MessageType string `json:"message_type"`
			MessageID   uint64 `json:"message_id"`
		}
		if err := json.Unmarshal(e.buf, &ev); err != nil || ev.PostType != "message" || ev.MessageType != "group" || ev.MessageID != 123456789 {
			t.Fatalf("size %d: decoded %+v, %v", size, ev, err)
		}
	}
}

// runBench runs benchMain with args (given at most two minutes) and
// returns its JSON report and its stdout and stderr as printed; a non-zero
// exit or a stdout that is not a report fails t.
func runBench(t *testing.T, args ...string) (rep report, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if code := benchMain(ctx, args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s\nstdout:\n%s", code, errOut.String(), out.String())
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out.String())
	}
	return rep, out.String(), errOut.String()
}

// TestSmoke runs a tiny suite through both relays, the real obmux binary
// and the baseline child, and checks that it reports every event delivered
// in order. It asserts nothing about speed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs obmux")
	}
	rep, out, errOut := runBench(t, "-json", "-run", "throughput,latency,stuck,filter,format", "-targets", "2", "-sizes", "300", "-events", "200",
		"-latency-targets", "3", "-rate", "1000", "-warmup", "100ms", "-latency-duration", "300ms", "-stuck-duration", "300ms",
		"-stuck-policies", "disconnect", "-filter-targets", "3", "-filter-sizes", "300", "-filter-rounds", "1")
	// throughput and latency through both relays, stuck through obmux and
	// the baseline, filter and format through obmux twice each (without
	// and with GROUPS, MESSAGE_FORMAT)
	if len(rep.Results) != 10 || rep.Failed {
		t.Fatalf("got %d results, failed %v:\n%s", len(rep.Results), rep.Failed, out)
	}
	relays := map[string]int{}
	for _, r := range rep.Results {
		relays[r.Relay]++
		if r.Error != "" || r.Lost != 0 || r.Disorder != 0 || r.Bad != 0 {
			t.Errorf("%s %s: error %q lost %d out of order %d bad %d", r.Relay, r.Label, r.Error, r.Lost, r.Disorder, r.Bad)
		}
		if r.Sent == 0 || r.PeakRSS == 0 {
			t.Errorf("%s %s: sent %d, peak RSS %d", r.Relay, r.Label, r.Sent, r.PeakRSS)
		}
		switch r.Scenario.Kind {
		case "throughput", "filter", "format":
			if r.Sent != 200 {
				t.Errorf("%s: sent %d events, want 200", r.Relay, r.Sent)
			}
		case "latency", "stuck":
			if r.LatSamples == 0 {
				t.Errorf("%s %s: no latency samples", r.Relay, r.Label)
			}
		}
	}
	if relays["obmux"] != 7 || relays["baseline"] != 3 {
		t.Errorf("runs per relay: %v", relays)
	}
	if !strings.Contains(errOut, "10/10]") {
		t.Errorf("no progress on stderr:\n%s", errOut)
	}
}

// TestSoakSmoke runs one soak pair (quiet, then with the hostile peers)
// with 200 events: nothing lost or out of order, the hostile peers did
// something, obmux's peak RSS within the soak's bound.
func TestSoakSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs obmux")
	}
	rep, out, _ := runBench(t, "-json", "-run", "soak", "-relays", "obmux", "-soak-targets", "2", "-soak-rounds", "1",
		"-events", "200")
	if len(rep.Results) != 2 || rep.Failed || rep.Results[0].Scenario.Hostile || !rep.Results[1].Scenario.Hostile {
		t.Fatalf("want a quiet and a hostile run:\n%s", out)
	}
	for _, r := range rep.Results {
		if r.Sent != 200 || r.Lost != 0 || r.Disorder != 0 || r.PeakRSS == 0 || r.PeakRSS > soakBound() {
			t.Errorf("%s: sent %d, lost %d, out of order %d, peak RSS %d", r.Label, r.Sent, r.Lost, r.Disorder, r.PeakRSS)
		}
	}
	if h := rep.Results[1].Hostile; h == "" || strings.Contains(h, " 0 ") {
		t.Errorf("the hostile peers: %q", h)
	}
}

// TestTable checks the table prints every section from a report.
func TestTable(t *testing.T) {
	o, err := parseFlags(nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	rep := &report{Command: "obmux-bench", CPUs: 2}
	for _, sc := range o.suite() {
		for _, r := range []string{"obmux", "baseline"} {
			rep.Results = append(rep.Results, result{Relay: r, Scenario: sc, Label: sc.label(), EventsPerSec: 1000, PeakRSS: 1 << 20, RSS: 1 << 20})
		}
	}
	var b bytes.Buffer
	printTable(&b, rep)
	for _, s := range []string{"Saturating throughput", "Latency at", "Idle targets", "stops reading", "Per-bot group filters", "Per-bot message formats", "median", "no event lost"} {
		if !bytes.Contains(b.Bytes(), []byte(s)) {
			t.Errorf("no %q in:\n%s", s, b.String())
		}
	}
}

// The filter runs give each target its own GROUPS list, read by obmux's
// configuration as such, each holding the events' group.
func TestGroupLists(t *testing.T) {
	sc := scenario{Kind: "filter", Targets: 10, Groups: 16}
	env := groupLists(sc)
	for i := range sc.Targets {
		env = append(env, "OBMUX_TARGET_"+targetName(i)+"_URL=ws://127.0.0.1:1/")
	}
	cfg, err := config.Load(env)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tc := range cfg.Targets {
		g := tc.Policy.Groups
		if len(g) != 16 || !slices.Contains(g, eventGroup) {
			t.Errorf("%s: GROUPS %v", tc.Name, g)
		}
		seen[fmt.Sprint(g)] = true
	}
	if len(cfg.Targets) != 10 || len(seen) != 10 {
		t.Errorf("%d targets, %d different lists", len(cfg.Targets), len(seen))
	}
	if groupLists(scenario{Kind: "filter", Targets: 10}) != nil || groupLists(scenario{Kind: "throughput", Targets: 10, Groups: 3}) != nil {
		t.Error("lists for a run without filters")
	}
}

// The format runs give the targets array and string in turn, read by
// obmux's configuration as such, and tell the string targets the size of
// the string form, which obmux's conversion makes of every bench event.
func TestFormatEnv(t *testing.T) {
	for _, size := range []int{minEventSize, 300, 16 << 10} {
		sc := scenario{Kind: "format", Targets: 4, Size: size, Formats: true}
		ts, err := newTargets(sc.Targets, sc.Size, 0)
		if err != nil {
			t.Fatal(err)
		}
		env, err := formatEnv(sc, ts)
		ts.close()
		if err != nil {
			t.Fatal(err)
		}
		for i := range sc.Targets {
			env = append(env, "OBMUX_TARGET_"+targetName(i)+"_URL=ws://127.0.0.1:1/")
		}
		cfg, err := config.Load(env)
		if err != nil {
			t.Fatal(err)
		}
		for i, tc := range cfg.Targets {
			want, wantSize := onebot.FormatArray, size
			if i%2 == 1 {
				want = onebot.FormatString
				wantSize, _ = stringEventSize(size)
			}
			if tc.Policy.MessageFormat != want || ts.list[i].size != wantSize {
				t.Errorf("%d B, %s: %q expecting %d B, want %q %d B", size, tc.Name, tc.Policy.MessageFormat, ts.list[i].size, want, wantSize)
			}
		}
		if n, _ := stringEventSize(size); n == size || n < minEventSize/2 {
			t.Errorf("%d B event: string form of %d B", size, n)
		}
	}
	if env, _ := formatEnv(scenario{Kind: "format", Targets: 4, Size: 300}, nil); env != nil {
		t.Error("formats for the run without them")
	}
}

// TestSmokeNATS runs throughput and latency over NATS: an account-side
// obmux, an embedded JetStream server and an edge, every event delivered.
func TestSmokeNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs obmux")
	}
	rep, out, _ := runBench(t, "-json", "-relays", "obmux-nats", "-run", "throughput,latency", "-targets", "2", "-sizes", "300",
		"-events", "200", "-latency-targets", "2", "-rate", "1000", "-warmup", "100ms", "-latency-duration", "300ms")
	if len(rep.Results) != 2 || rep.Failed {
		t.Fatalf("got %d results, failed %v:\n%s", len(rep.Results), rep.Failed, out)
	}
	for _, r := range rep.Results {
		if r.Relay != natsRelay || r.EventsPerSec == 0 || r.Lost != 0 {
			t.Errorf("%s %s: %.0f ev/s, %d lost", r.Relay, r.Label, r.EventsPerSec, r.Lost)
		}
	}
}

// The hold scenario runs through obmux alone: its targets and forward
// clients all connected, greeted and getting heartbeats at the default
// interval, its CPU and RSS measured, and the table has its section.
func TestSmokeHold(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs obmux")
	}
	rep, out, _ := runBench(t, "-json", "-run", "hold", "-hold-targets", "3", "-hold-clients", "4", "-idle-settle", "100ms",
		"-hold-duration", "5500ms")
	if len(rep.Results) != 1 || rep.Failed {
		t.Fatalf("got %d results, failed %v:\n%s", len(rep.Results), rep.Failed, out)
	}
	r := rep.Results[0]
	if r.Relay != "obmux" || r.Scenario.Clients != 4 || r.RSS == 0 || r.Seconds < 5 {
		t.Errorf("%s %s: %d clients, RSS %d, %.1f s", r.Relay, r.Label, r.Scenario.Clients, r.RSS, r.Seconds)
	}
	// Every one of the 7 gets a heartbeat every 5 s: at least one each.
	if r.Heartbeats < 7 {
		t.Errorf("%d heartbeats received in %.1f s by 3 targets and 4 clients, want at least 7", r.Heartbeats, r.Seconds)
	}
	var b strings.Builder
	printTable(&b, &rep)
	if !strings.Contains(b.String(), "Idle targets and forward clients held") {
		t.Errorf("no hold section in the table:\n%s", b.String())
	}
	if strings.Contains(b.String(), "Saturating throughput") {
		t.Errorf("a throughput section with no throughput run:\n%s", b.String())
	}
}

// Flags that cannot make a run are refused before anything starts, each
// with the flag it is about.
func TestFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"-relays", "obmux,nginx"},
		{"-run", "throughput,warp"},
		{"-targets", "ten"},
		{"-sizes", "10"},
		{"-latency-size", "10"},
		{"-filter-rounds", "0"},
		{"-profile", "/tmp/p", "-obmux", "/usr/bin/obmux"},
		{"extra"},
	} {
		_, err := parseFlags(args, io.Discard)
		if err == nil {
			t.Errorf("%q accepted", args)
			continue
		}
		if !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%q: error %q does not name the flag", args, err)
		}
	}
}
