package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// printTable prints the report as tables, obmux and the baseline side by
// side.
func printTable(w io.Writer, rep *report) {
	fmt.Fprintf(w, "obmux-bench  %s  %s  %d CPUs  %s\n", rep.Command, rep.GoVer, rep.CPUs, rep.Started)
	t := newTable(w, rep)
	t.throughput()
	t.latency()
	t.idle()
	printFilter(t.tw, rep, t.section)
	printFormat(t.tw, rep, t.section)
	printSoak(t.tw, rep, t.section)
	printHold(t.tw, rep, t.section)
	printNATS(t)
	t.stuck()
	t.tw.Flush()
	t.failures()
}

// table prints a report's sections: rows are its scenarios, each once.
type table struct {
	w    io.Writer
	tw   *tabwriter.Writer
	rep  *report
	rows []scenario
}

func newTable(w io.Writer, rep *report) *table {
	seen := map[string]bool{}
	var rows []scenario
	for _, r := range rep.Results {
		key := r.Label + r.Scenario.Policy
		if !seen[key] {
			seen[key] = true
			rows = append(rows, r.Scenario)
		}
	}
	return &table{w: w, tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight), rep: rep, rows: rows}
}

// find returns relay's result of a scenario like s (nil: none).
func (t *table) find(relay string, s scenario) *result {
	for i := range t.rep.Results {
		r := &t.rep.Results[i]
		if r.Relay == relay && same(s, r.Scenario) {
			return r
		}
	}
	return nil
}

// same reports whether b is the scenario a, whatever its policy and round.
func same(a, b scenario) bool {
	return b.Kind == a.Kind && b.Targets == a.Targets && b.Size == a.Size && b.Rate == a.Rate
}

// section starts a section with title and the columns' header.
func (t *table) section(title, header string) {
	t.tw.Flush()
	fmt.Fprintf(t.w, "\n%s\n", title)
	fmt.Fprintln(t.tw, header)
}

// throughput prints the saturating runs, a row per scenario; nothing when
// there were none.
func (t *table) throughput() {
	if !slices.ContainsFunc(t.rows, func(s scenario) bool { return s.Kind == "throughput" }) {
		return
	}
	t.section("Saturating throughput (events/s delivered to each target; the upstream keeps at most W events beyond the slowest target)",
		"targets\tsize\tW\tobmux ev/s\tbaseline ev/s\tratio\tobmux CPU s/1e6 frames\tbaseline\tobmux peak RSS\tbaseline\tobmux alloc B/event\tbaseline\t")
	for _, s := range t.rows {
		if s.Kind != "throughput" {
			continue
		}
		o, b := t.find("obmux", s), t.find("baseline", s)
		fmt.Fprintf(t.tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Targets, sizeName(s.Size), s.Window,
			col(o, evs), col(b, evs), ratio(o, b, func(r *result) float64 { return r.EventsPerSec }),
			col(o, cpu), col(b, cpu), col(o, peak), col(b, peak), col(o, alloc), col(b, alloc))
	}
}

// latency prints a section per fixed-rate scenario, with the ratios.
func (t *table) latency() {
	for _, s := range t.rows {
		if s.Kind != "latency" {
			continue
		}
		t.section(fmt.Sprintf("Latency at a fixed %s events/s, %d targets, %s events (upstream send to target read, end to end)", si(s.Rate), s.Targets, sizeName(s.Size)),
			"relay\tev/s\tp50 µs\tp99 µs\tmax µs\tsamples\tCPU %\tCPU s/1e6 frames\tpeak RSS\talloc B/event\t")
		for _, relay := range []string{"obmux", "baseline"} {
			if r := t.find(relay, s); r != nil {
				fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", relay, col(r, evs), col(r, p50), col(r, p99), col(r, pmax),
					col(r, func(r *result) string { return fmt.Sprint(r.LatSamples) }), col(r, cpuPct), col(r, cpu), col(r, peak), col(r, alloc))
			}
		}
		o, b := t.find("obmux", s), t.find("baseline", s)
		if o != nil && b != nil {
			fmt.Fprintf(t.tw, "obmux/baseline\t\t%s\t%s\t%s\t\t\t%s\t%s\t\t\n",
				ratio(o, b, func(r *result) float64 { return r.LatP50us }), ratio(o, b, func(r *result) float64 { return r.LatP99us }),
				ratio(o, b, func(r *result) float64 { return r.LatMaxus }), ratio(o, b, func(r *result) float64 { return r.CPUPerMFrames }),
				ratio(o, b, func(r *result) float64 { return float64(r.PeakRSS) }))
		}
	}
}

// idle prints the idle runs: a column per number of targets, a row per
// relay, and the RSS per extra target.
func (t *table) idle() {
	var idle []scenario
	for _, s := range t.rows {
		if s.Kind == "idle" {
			idle = append(idle, s)
		}
	}
	if len(idle) == 0 {
		return
	}
	hdr := "relay\t"
	for _, s := range idle {
		hdr += fmt.Sprintf("RSS %d targets\t", s.Targets)
	}
	if len(idle) > 1 {
		hdr += "per extra target\t"
	}
	t.section("Idle targets (RSS after all are connected and settled; default heartbeat 5s and ping 20s)", hdr)
	for _, relay := range []string{"obmux", "baseline"} {
		if line, ok := t.idleRow(relay, idle); ok {
			fmt.Fprintln(t.tw, line)
		}
	}
}

// idleRow is relay's row of the idle section; ok is false when it has no
// result.
func (t *table) idleRow(relay string, idle []scenario) (line string, ok bool) {
	line = relay + "\t"
	var first, last *result
	for _, s := range idle {
		r := t.find(relay, s)
		line += col(r, func(r *result) string { return mib(r.RSS) }) + "\t"
		if r != nil && r.Error == "" {
			ok = true
			if first == nil {
				first = r
			}
			last = r
		}
	}
	if len(idle) > 1 {
		if first != nil && last != first {
			per := float64(last.RSS-first.RSS) / float64(last.Scenario.Targets-first.Scenario.Targets)
			line += fmt.Sprintf("%.1f KiB\t", per/1024)
		} else {
			line += "-\t"
		}
	}
	return line, ok
}

// stuck prints the first stuck-target scenario, a row per relay and policy.
func (t *table) stuck() {
	i := slices.IndexFunc(t.rows, func(s scenario) bool { return s.Kind == "stuck" })
	if i < 0 {
		return
	}
	s := t.rows[i]
	t.section(fmt.Sprintf("One of %d targets stops reading, %s events/s of %s (figures for the other %d targets)", s.Targets, si(s.Rate), sizeName(s.Size), s.Targets-s.Stuck),
		"relay\tpolicy\tev/s\tp50 µs\tp99 µs\tmax µs\tpeak RSS\tRSS mid-run\tRSS end\tstuck target connections\tslow-consumer logs\tlost\t")
	for i := range t.rep.Results {
		r := &t.rep.Results[i]
		if r.Scenario.Kind != "stuck" || !same(s, r.Scenario) {
			continue
		}
		pol := r.Scenario.Policy
		if r.Relay == "baseline" {
			pol = "disconnect at 1024"
		}
		fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Relay, pol, col(r, evs), col(r, p50), col(r, p99), col(r, pmax),
			col(r, peak), col(r, func(r *result) string { return mib(r.RSSMid) }), col(r, func(r *result) string { return mib(r.RSS) }),
			col(r, func(r *result) string { return fmt.Sprint(r.StuckConns) }), col(r, func(r *result) string { return fmt.Sprint(r.SlowLogs) }),
			col(r, func(r *result) string { return fmt.Sprint(r.Lost) }))
	}
}

// failures lists every failed run, or says there was none.
func (t *table) failures() {
	bad := false
	for _, r := range t.rep.Results {
		if r.failed() {
			if !bad {
				fmt.Fprintln(t.w, "\nFAILURES")
				bad = true
			}
			fmt.Fprintf(t.w, "  %s %s: lost %d, out of order %d, bad frames %d %s\n", r.Relay, r.Label, r.Lost, r.Disorder, r.Bad, r.Error)
		}
	}
	if !bad {
		fmt.Fprintln(t.w, "\nno event lost or out of order on any healthy target")
	}
}

func col(r *result, f func(r *result) string) string {
	switch {
	case r == nil:
		return "-"
	case r.Error != "":
		return "error"
	}
	return f(r)
}

func evs(r *result) string    { return si(r.EventsPerSec) }
func cpu(r *result) string    { return fmt.Sprintf("%.2f", r.CPUPerMFrames) }
func cpuPct(r *result) string { return fmt.Sprintf("%.0f", r.CPUPercent) }
func peak(r *result) string   { return mib(r.PeakRSS) }
func alloc(r *result) string  { return bytesName(r.AllocPerEvent) }
func p50(r *result) string    { return fmt.Sprintf("%.0f", r.LatP50us) }
func p99(r *result) string    { return fmt.Sprintf("%.0f", r.LatP99us) }
func pmax(r *result) string   { return fmt.Sprintf("%.0f", r.LatMaxus) }

func ratio(a, b *result, f func(r *result) float64) string {
	if a == nil || b == nil || a.Error != "" || b.Error != "" || f(b) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", f(a)/f(b))
}

// si formats a rate with k/M suffixes.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.2fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func mib(b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func bytesName(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", b/(1<<20))
	case b >= 10<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f", b)
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// printFilter prints the filter runs: per size, each pair of runs (no
// filter, then every target with its own GROUPS list) and the median of
// their ratios.
func printFilter(tw *tabwriter.Writer, rep *report, section func(title, header string)) {
	groups := 0
	for _, r := range rep.Results {
		if r.Scenario.Kind == "filter" && r.Scenario.Groups > 0 {
			groups = r.Scenario.Groups
		}
	}
	printPairs(tw, rep, section, "filter", func(s scenario) bool { return s.Groups > 0 },
		func(targets int) string {
			return fmt.Sprintf("Per-bot group filters: %d targets through obmux, without filters and each with its own OBMUX_TARGET_<NAME>_GROUPS of %d groups (all holding the events' group, so each target checks and gets every event); runs alternate", targets, groups)
		}, "unfiltered", "GROUPS")
}

// printFormat prints the format runs like printFilter: without message
// formats, then half the targets with MESSAGE_FORMAT=array (the events'
// form) and half with string (one conversion per event, shared).
func printFormat(tw *tabwriter.Writer, rep *report, section func(title, header string)) {
	printPairs(tw, rep, section, "format", func(s scenario) bool { return s.Formats },
		func(targets int) string {
			return fmt.Sprintf("Per-bot message formats: %d targets through obmux, without MESSAGE_FORMAT and with array and string in turn (the events are arrays: one string form made per event, shared by half the targets); runs alternate", targets)
		}, "as sent", "formats")
}

// printPairs prints the runs of kind in pairs (plain, then variant), per
// size, with each pair's ratio and the median of their ratios.
func printPairs(tw *tabwriter.Writer, rep *report, section func(title, header string), kind string, variant func(scenario) bool,
	title func(targets int) string, plainName, variantName string) {
	type pair struct{ plain, other *result }
	var sizes []int
	pairs := map[int][]pair{}
	var targets int
	for i := range rep.Results {
		r := &rep.Results[i]
		s := r.Scenario
		if s.Kind != kind {
			continue
		}
		if _, ok := pairs[s.Size]; !ok {
			sizes = append(sizes, s.Size)
		}
		for len(pairs[s.Size]) < s.Round {
			pairs[s.Size] = append(pairs[s.Size], pair{})
		}
		p := &pairs[s.Size][s.Round-1]
		if variant(s) {
			p.other = r
		} else {
			p.plain = r
		}
		targets = s.Targets
	}
	if len(sizes) == 0 {
		return
	}
	section(title(targets), fmt.Sprintf("size\tround\t%[1]s ev/s\t%[2]s ev/s\tratio\t%[1]s CPU s/1e6 frames\t%[2]s\t%[1]s alloc B/event\t%[2]s\t", plainName, variantName))
	for _, size := range sizes {
		var ratios []float64
		for i, p := range pairs[size] {
			r := ratio(p.other, p.plain, func(r *result) float64 { return r.EventsPerSec })
			if p.other != nil && p.plain != nil && p.other.Error == "" && p.plain.Error == "" && p.plain.EventsPerSec > 0 {
				ratios = append(ratios, p.other.EventsPerSec/p.plain.EventsPerSec)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", sizeName(size), i+1, col(p.plain, evs), col(p.other, evs), r,
				col(p.plain, cpu), col(p.other, cpu), col(p.plain, alloc), col(p.other, alloc))
		}
		if len(ratios) > 0 {
			slices.Sort(ratios)
			fmt.Fprintf(tw, "%s\tmedian\t\t\t%.2f\t\t\t\t\t\n", sizeName(size), ratios[len(ratios)/2])
		}
	}
}

// printSoak prints the soak runs like printFilter (quiet, then with the
// hostile peers), then each hostile run's peak RSS against its bound and
// what its hostile peers did.
func printSoak(tw *tabwriter.Writer, rep *report, section func(title, header string)) {
	printPairs(tw, rep, section, "soak", func(s scenario) bool { return s.Hostile },
		func(targets int) string {
			return fmt.Sprintf("Soak: %d healthy targets through obmux, quiet and then beside the hostile peers of issue 13 (the flood generators share the machine's CPUs); runs alternate", targets)
		}, "quiet", "hostile")
	hostile := false
	for i := range rep.Results {
		r := &rep.Results[i]
		if r.Scenario.Kind != "soak" || !r.Scenario.Hostile {
			continue
		}
		if !hostile {
			section(fmt.Sprintf("Soak: obmux's peak RSS beside the hostile peers (bound 2 x OBMUX_QUEUE_BYTES + 64 MiB = %s)", mib(soakBound())),
				"round\tpeak RSS\thostile peers\t")
			hostile = true
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t\n", r.Scenario.Round, col(r, peak), r.Hostile)
	}
}
