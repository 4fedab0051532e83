package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// Tests that the Grafana dashboard (deploy/grafana/obmux.json) and the
// Prometheus alert rules (deploy/prometheus/alerts.yml, and the series their
// unit tests feed in, alerts_test.yml) use only metrics that a real obmux
// exports: every metric name in every panel query, template variable query
// and rule expression must be a series of a real scrape, every label they
// match on must be a label of that series, and every literal label value
// (role="target", kind="event", reason="queue_overflow") must occur in the
// scrape. The files' PromQL syntax itself is checked by promtool
// (deploy/check-prometheus.sh). Every test of deploy/ is in a
// deploy_*_test.go here or a script beside the files (docs/deploy.md,
// "Tests of these files").

const (
	dashboardFile  = "../../deploy/grafana/obmux.json"
	alertsFile     = "../../deploy/prometheus/alerts.yml"
	alertsTestFile = "../../deploy/prometheus/alerts_test.yml"
)

// scrapeLabels are the labels Prometheus adds to every scraped series.
var scrapeLabels = map[string]bool{"instance": true, "job": true}

// synthetic are series Prometheus itself makes, with their labels; matchers
// on them are not checked against obmux's scrape.
var synthetic = map[string]bool{"up": true}

// knownSeries maps each series name of a scrape (histograms as _bucket,
// _sum and _count, summaries as the name, _sum and _count) to its labels and
// each label to the values it has.
type knownSeries map[string]map[string]map[string]bool

func (k knownSeries) add(name string, labels []*dto.LabelPair, extra ...string) {
	if k[name] == nil {
		k[name] = map[string]map[string]bool{}
	}
	put := func(l, v string) {
		if k[name][l] == nil {
			k[name][l] = map[string]bool{}
		}
		k[name][l][v] = true
	}
	for _, lp := range labels {
		put(lp.GetName(), lp.GetValue())
	}
	for i := 0; i+1 < len(extra); i += 2 {
		put(extra[i], extra[i+1])
	}
}

func newKnownSeries(mfs map[string]*dto.MetricFamily) knownSeries {
	k := knownSeries{}
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				for _, b := range m.GetHistogram().GetBucket() {
					k.add(name+"_bucket", m.Label, "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))
				}
				k.add(name+"_bucket", m.Label, "le", "+Inf")
				k.add(name+"_sum", m.Label)
				k.add(name+"_count", m.Label)
			case dto.MetricType_SUMMARY:
				for _, q := range m.GetSummary().GetQuantile() {
					k.add(name, m.Label, "quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64))
				}
				k.add(name+"_sum", m.Label)
				k.add(name+"_count", m.Label)
			default:
				k.add(name, m.Label)
			}
		}
	}
	return k
}

// TestDashboard runs obmux with an upstream, a target and a forward-WS
// client, makes traffic of every kind the dashboard shows (events, an API
// call, pings), scrapes /metrics and checks the dashboard and the alert
// rules against it.
func TestDashboard(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := startForward(t, up, "OBMUX_TARGET_BOT_URL="+tg.URL, "OBMUX_PING_INTERVAL=20ms", "OBMUX_HEARTBEAT_INTERVAL=50ms")
	p := tg.accept()
	dialForward(t, in, "/", nil)
	up.send(event(1))
	if e := nextEvent(t, p); !strings.Contains(string(e), `"message_id":1`) {
		t.Fatalf("target got %s", e)
	}
	if err := p.Send(ctxT(t), []byte(`{"action":"get_status","echo":"dash"}`)); err != nil {
		t.Fatal(err)
	}
	if r := nextEvent(t, p); !strings.Contains(string(r), `"echo":"dash"`) {
		t.Fatalf("target got %s", r)
	}
	eventually(t, "the API call, a ping RTT and a heartbeat in the metrics", func() bool {
		return in.metric("obmux_api_request_duration_seconds", "name=bot") >= 1 &&
			in.metric("obmux_ping_rtt_seconds", "role=target", "name=bot") > 0 &&
			in.metric("obmux_heartbeats_sent_total", "name=bot") > 0
	})
	known := newKnownSeries(in.metrics())
	// Every family docs/metrics.md documents is in this scrape: otherwise the
	// checks below would be weaker than they look.
	for _, name := range []string{"obmux_connection_up", "obmux_connects_total", "obmux_disconnects_total",
		"obmux_frames_total", "obmux_bytes_total", "obmux_dropped_frames_total", "obmux_queue_length",
		"obmux_api_requests_total", "obmux_api_request_duration_seconds_bucket", "obmux_api_pending_requests",
		"obmux_ping_rtt_seconds", "obmux_heartbeats_sent_total", "obmux_replayed_events_total",
		"obmux_replay_lost_total", "obmux_upstream_last_event_timestamp_seconds", "obmux_build_info",
		"obmux_account_online", "obmux_account_transitions_total",
		"go_goroutines", "process_start_time_seconds"} {
		if known[name] == nil {
			t.Errorf("the scrape has no %s", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("grafana", func(t *testing.T) {
		b, err := os.ReadFile(dashboardFile)
		if err != nil {
			t.Fatal(err)
		}
		queries, err := dashboardQueries(b)
		if err != nil {
			t.Fatalf("%s: %v", dashboardFile, err)
		}
		if len(queries) < 10 {
			t.Fatalf("%s: only %d queries found", dashboardFile, len(queries))
		}
		for _, p := range checkQueries(known, queries, true) {
			t.Errorf("%s: %s", dashboardFile, p)
		}
	})

	t.Run("alerts", func(t *testing.T) {
		for _, f := range []struct {
			file, key string
			values    bool
		}{{alertsFile, "expr", true}, {alertsTestFile, "series", false}} {
			b, err := os.ReadFile(f.file)
			if err != nil {
				t.Fatal(err)
			}
			queries := yamlValues(string(b), f.key)
			if len(queries) < 5 {
				t.Fatalf("%s: only %d %s: values found", f.file, len(queries), f.key)
			}
			for _, p := range checkQueries(known, queries, f.values) {
				t.Errorf("%s: %s", f.file, p)
			}
		}
	})

	// docs/metrics.md's table and the scrape agree: every obmux_ family
	// exported is documented, and every documented one is exported (or
	// has series only in situations this run does not make).
	t.Run("docs", func(t *testing.T) {
		b, err := os.ReadFile(metricsDoc)
		if err != nil {
			t.Fatal(err)
		}
		documented := documentedMetrics(string(b))
		if len(documented) < 10 {
			t.Fatalf("%s: only %d metrics found in its table", metricsDoc, len(documented))
		}
		for name := range in.metrics() {
			if strings.HasPrefix(name, "obmux_") && !documented[name] {
				t.Errorf("%s is exported but not in %s's table", name, metricsDoc)
			}
		}
		for name := range documented {
			if known[name] == nil && known[name+"_bucket"] == nil && seriesOnlyWhen[name] == "" {
				t.Errorf("%s documents %s, which the scrape does not have", metricsDoc, name)
			}
		}
	})

	// The checks can fail: a dashboard and a rule with a misspelt metric, a
	// label the metric does not have and a label value obmux never exports.
	t.Run("broken", func(t *testing.T) {
		dash := `{"panels": [{"title": "Row", "type": "row", "panels": [{"title": "Q", "id": 7, "targets": [
			{"refId": "A", "expr": "sum(rate(obmux_frames_totl{kind=\"event\"}[$__rate_interval]))"}]}]},
			{"title": "L", "id": 8, "targets": [{"refId": "B", "expr": "obmux_queue_length{role=\"target\"}"}]}],
			"templating": {"list": [{"name": "v", "type": "query", "query": {"query": "label_values(obmux_connection_up{role=\"targets\"}, name)"}}]}}`
		queries, err := dashboardQueries([]byte(dash))
		if err != nil {
			t.Fatal(err)
		}
		rules := "groups:\n  - rules:\n      - alert: X\n        expr: |\n          obmux_connection_up{role=\"upstream\"}\n            and on () obmux_api_request_duration_seconds > 1\n"
		queries = append(queries, yamlValues(rules, "expr")...)
		problems := checkQueries(known, queries, true)
		for _, want := range []string{`obmux_frames_totl`, `obmux_queue_length has no label role`,
			`role="targets"`, `obmux_api_request_duration_seconds is not`} {
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, want) }) {
				t.Errorf("no problem mentions %s; problems:\n%s", want, strings.Join(problems, "\n"))
			}
		}
		if len(problems) != 4 {
			t.Errorf("%d problems, want 4:\n%s", len(problems), strings.Join(problems, "\n"))
		}
	})
}

// metricsDoc documents every metric in a table whose first column is name.
const metricsDoc = "../../docs/metrics.md"

// seriesOnlyWhen are the documented families TestDashboard's run has no
// series of, and when they have one.
var seriesOnlyWhen = map[string]string{
	"obmux_notifications_total": "OBMUX_NOTIFY_URL is set",
}

// documentedMetrics returns the names in the first cells of the metric
// table (header "| name | type | ...") of a Markdown document.
func documentedMetrics(doc string) map[string]bool {
	names := map[string]bool{}
	in := false
	for _, l := range strings.Split(doc, "\n") {
		switch {
		case strings.HasPrefix(l, "| name |"):
			in = true
		case in && !strings.HasPrefix(l, "|"):
			return names
		case in:
			cell, _, _ := strings.Cut(strings.TrimPrefix(l, "|"), "|")
			if m := metricName.FindStringSubmatch(cell); m != nil {
				names[m[1]] = true
			}
		}
	}
	return names
}

var metricName = regexp.MustCompile("`(obmux_[a-z0-9_]+)`")

// query is one PromQL expression and where it comes from.
type query struct{ where, expr string }

// dashboardQueries returns the PromQL of every panel target (rows' nested
// panels included) and every query template variable of a Grafana
// dashboard.
func dashboardQueries(b []byte) ([]query, error) {
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		ID      int      `json:"id"`
		Title   string   `json:"title"`
		Type    string   `json:"type"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Query      json.RawMessage `json:"query"`
				Definition string          `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	var out []query
	var walk func(ps []panel) error
	walk = func(ps []panel) error {
		for _, p := range ps {
			for _, tg := range p.Targets {
				where := fmt.Sprintf("panel %q (id %d) query %s", p.Title, p.ID, tg.RefID)
				if strings.TrimSpace(tg.Expr) == "" {
					return fmt.Errorf("%s has no expr", where)
				}
				out = append(out, query{where, tg.Expr})
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, err
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// The query is a string (older dashboards) or an object with one.
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				return nil, fmt.Errorf("variable %s: query: %v", v.Name, err)
			}
			q = obj.Query
		}
		for _, s := range []string{q, v.Definition} {
			if s == "" {
				continue
			}
			expr, ok := variableExpr(s)
			if !ok {
				return nil, fmt.Errorf("variable %s: unsupported query %q", v.Name, s)
			}
			if expr != "" {
				out = append(out, query{"variable " + v.Name, expr})
			}
		}
	}
	return out, nil
}

var (
	labelValuesRE = regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$`)
	labelOnlyRE   = regexp.MustCompile(`^label_values\(\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$`)
	queryResultRE = regexp.MustCompile(`^query_result\((.*)\)$`)
)

// variableExpr returns the PromQL inside a Grafana Prometheus variable
// query: label_values(expr, label), query_result(expr); "" for
// label_values(label), which names no metric.
func variableExpr(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if m := labelValuesRE.FindStringSubmatch(s); m != nil {
		return m[1], true
	}
	if labelOnlyRE.MatchString(s) {
		return "", true
	}
	if m := queryResultRE.FindStringSubmatch(s); m != nil {
		return m[1], true
	}
	return "", false
}

// yamlValues returns the values of every key: in a YAML file, block
// scalars (| or >) included, without a YAML library: enough for rule and
// rule-test files, where key is "expr" or "series".
func yamlValues(text, key string) []query {
	lines := strings.Split(text, "\n")
	var out []query
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimLeft(line, " ")
		indent := len(line) - len(trimmed)
		if rest, ok := strings.CutPrefix(trimmed, "- "); ok { // "- expr: ..."
			trimmed, indent = rest, indent+2
		}
		v, ok := strings.CutPrefix(trimmed, key+":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		where := fmt.Sprintf("line %d", i+1)
		if v != "" && (v[0] == '|' || v[0] == '>') {
			var block []string
			for i+1 < len(lines) {
				l := lines[i+1]
				if strings.TrimSpace(l) != "" && len(l)-len(strings.TrimLeft(l, " ")) <= indent {
					break
				}
				block = append(block, strings.TrimSpace(l))
				i++
			}
			out = append(out, query{where, strings.TrimSpace(strings.Join(block, "\n"))})
			continue
		}
		switch {
		case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
			v = strings.ReplaceAll(v[1:len(v)-1], "''", "'")
		case len(v) >= 2 && v[0] == '"':
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
		}
		out = append(out, query{where, v})
	}
	return out
}

// checkQueries returns a problem for every metric, label and literal label
// value in queries that known does not have, and for every query that
// cannot be read. Without values, the values of the label name (the names
// of targets, which a rule test makes up) are not checked.
func checkQueries(known knownSeries, queries []query, values bool) []string {
	var problems []string
	for _, q := range queries {
		sels, err := promqlSelectors(q.expr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v in %q", q.where, err, q.expr))
			continue
		}
		if len(sels) == 0 {
			problems = append(problems, fmt.Sprintf("%s: no metric in %q", q.where, q.expr))
		}
		for _, s := range sels {
			if synthetic[s.metric] {
				continue
			}
			labels := known[s.metric]
			if labels == nil {
				problems = append(problems, fmt.Sprintf("%s: %s is not exported by obmux (%s)", q.where, s.metric, suggest(known, s.metric)))
				continue
			}
			for _, m := range s.matchers {
				if scrapeLabels[m.label] {
					continue
				}
				vals, ok := labels[m.label]
				if !ok {
					problems = append(problems, fmt.Sprintf("%s: %s has no label %s (it has %s)", q.where, s.metric, m.label, keys(labels)))
					continue
				}
				if !values && m.label == "name" {
					continue
				}
				if problem := checkValue(m, vals); problem != "" {
					problems = append(problems, fmt.Sprintf("%s: %s{%s%s%q}: %s", q.where, s.metric, m.label, m.op, m.value, problem))
				}
			}
		}
	}
	return problems
}

var grafanaVarRE = regexp.MustCompile(`\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*|\[\[[^\]]*\]\]`)

// checkValue says what is wrong with an = or =~ matcher that no value of
// the scrape satisfies; Grafana variables in it match anything.
func checkValue(m matcher, vals map[string]bool) string {
	if m.op != "=" && m.op != "=~" || m.value == "" {
		return ""
	}
	re := m.value
	if m.op == "=" {
		if !grafanaVarRE.MatchString(re) {
			if vals[re] {
				return ""
			}
			return fmt.Sprintf("no such value (there are %s)", keys(vals))
		}
		re = regexp.QuoteMeta(re)
	}
	re = grafanaVarRE.ReplaceAllString(re, ".*")
	r, err := regexp.Compile("^(?:" + re + ")$")
	if err != nil {
		return fmt.Sprintf("bad regexp: %v", err)
	}
	for v := range vals {
		if r.MatchString(v) {
			return ""
		}
	}
	return fmt.Sprintf("matches no value (there are %s)", keys(vals))
}

func keys[V any](m map[string]V) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// suggest lists the exported series sharing the longest prefix with name.
func suggest(known knownSeries, name string) string {
	best, n := []string(nil), 0
	for k := range known {
		p := 0
		for p < len(k) && p < len(name) && k[p] == name[p] {
			p++
		}
		switch {
		case p > n:
			best, n = []string{k}, p
		case p == n:
			best = append(best, k)
		}
	}
	sort.Strings(best)
	if len(best) > 5 {
		best = best[:5]
	}
	return "did you mean " + strings.Join(best, " or ") + "?"
}

// selector is one vector selector of a PromQL expression.
type selector struct {
	metric   string
	matchers []matcher
}

type matcher struct{ label, op, value string }

// PromQL words that are not metric names when not followed by "(".
var promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "atan2": true}

// Aggregation operators may be followed by "by (...)" before their "(".
var promqlAggregations = map[string]bool{"sum": true, "min": true, "max": true, "avg": true, "group": true,
	"stddev": true, "stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true}

// Keywords followed by a parenthesized list of label names.
var promqlLabelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true}

// promqlSelectors returns the vector selectors of a PromQL expression
// (Grafana variables allowed): not a full parser, but enough to find every
// metric name and label matcher. Label names in by/without/on/ignoring/
// group_left/group_right lists, function names, strings, durations and
// numbers are skipped.
func promqlSelectors(expr string) ([]selector, error) {
	toks, err := promqlTokens(expr)
	if err != nil {
		return nil, err
	}
	var out []selector
	for i := 0; i < len(toks); i++ {
		tk := toks[i]
		nextIs := func(s string) bool { return i+1 < len(toks) && toks[i+1].kind == 'p' && toks[i+1].text == s }
		switch {
		case tk.kind == 'i' && promqlLabelLists[strings.ToLower(tk.text)]:
			if nextIs("(") {
				i = skipTo(toks, i+1, ")")
			}
		case tk.kind == 'i' && (promqlKeywords[strings.ToLower(tk.text)] || promqlAggregations[tk.text]):
		case tk.kind == 'i' && nextIs("("): // a function
		case tk.kind == 'i':
			s := selector{metric: tk.text}
			if nextIs("{") {
				var err error
				if s.matchers, i, err = promqlMatchers(toks, i+2); err != nil {
					return nil, err
				}
			}
			out = append(out, s)
		case tk.kind == 'p' && tk.text == "{":
			return nil, fmt.Errorf("a selector without a metric name")
		case tk.kind == 'p' && tk.text == "[":
			i = skipTo(toks, i, "]")
		}
	}
	return out, nil
}

// skipTo returns the index of the first token close at or after i.
func skipTo(toks []token, i int, close string) int {
	for i < len(toks) && !(toks[i].kind == 'p' && toks[i].text == close) {
		i++
	}
	return i
}

// promqlMatchers reads label matchers from toks[i] up to "}" and returns
// them with the index of the "}".
func promqlMatchers(toks []token, i int) ([]matcher, int, error) {
	var ms []matcher
	for ; i < len(toks); i++ {
		if toks[i].kind == 'p' && toks[i].text == "}" {
			return ms, i, nil
		}
		if toks[i].kind == 'p' && toks[i].text == "," {
			continue
		}
		if i+2 >= len(toks) || toks[i].kind != 'i' || toks[i+1].kind != 'o' || toks[i+2].kind != 's' {
			return nil, i, fmt.Errorf("cannot read the label matcher at %q", toks[i].text)
		}
		ms = append(ms, matcher{toks[i].text, toks[i+1].text, toks[i+2].text})
		i += 2
	}
	return nil, i, fmt.Errorf("unclosed {")
}

// token kinds: 'i' identifier, 's' string (unquoted), 'n' number or
// duration, 'o' matcher operator, 'p' punctuation or other operator, 'v'
// Grafana variable.
type token struct {
	kind byte
	text string
}

func promqlTokens(s string) ([]token, error) {
	var toks []token
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string")
			}
			text := s[i+1 : j]
			if c != '`' {
				if u, err := strconv.Unquote(`"` + strings.ReplaceAll(text, `"`, `\"`) + `"`); err == nil {
					text = u
				}
			}
			toks = append(toks, token{'s', text})
			i = j + 1
		case c == '$' || strings.HasPrefix(s[i:], "[["):
			loc := grafanaVarRE.FindStringIndex(s[i:])
			if loc == nil || loc[0] != 0 {
				return nil, fmt.Errorf("cannot read %q", s[i:])
			}
			toks = append(toks, token{'v', s[i : i+loc[1]]})
			i += loc[1]
		case '0' <= c && c <= '9' || c == '.' && i+1 < len(s) && '0' <= s[i+1] && s[i+1] <= '9':
			j := i
			for j < len(s) && (isIdent(s[j], false) || s[j] == '.') {
				j++
			}
			toks = append(toks, token{'n', s[i:j]})
			i = j
		case isIdent(c, true):
			j := i
			for j < len(s) && isIdent(s[j], false) {
				j++
			}
			toks = append(toks, token{'i', s[i:j]})
			i = j
		case strings.HasPrefix(s[i:], "=~") || strings.HasPrefix(s[i:], "!~") || strings.HasPrefix(s[i:], "!="):
			toks = append(toks, token{'o', s[i : i+2]})
			i += 2
		case strings.HasPrefix(s[i:], "==") || strings.HasPrefix(s[i:], ">=") || strings.HasPrefix(s[i:], "<="):
			toks = append(toks, token{'p', s[i : i+2]})
			i += 2
		case c == '=':
			toks = append(toks, token{'o', "="})
			i++
		default:
			toks = append(toks, token{'p', string(c)})
			i++
		}
	}
	return toks, nil
}

// TestDashboardPromQL checks the selector reader on the shapes of query the
// deploy files use.
func TestDashboardPromQL(t *testing.T) {
	for _, c := range []struct{ expr, want string }{
		{`obmux_connection_up{role="upstream"} == 0`, `obmux_connection_up{role="upstream"}`},
		{`sum by (instance, job, name, reason) (increase(obmux_dropped_frames_total[5m])) > 0`, `obmux_dropped_frames_total`},
		{`histogram_quantile(0.99, sum by (le, name) (rate(obmux_api_request_duration_seconds_bucket{instance=~"$instance", name=~"$target"}[$__rate_interval])))`,
			`obmux_api_request_duration_seconds_bucket{instance=~"$instance",name=~"$target"}`},
		{"(time() - obmux_upstream_last_event_timestamp_seconds > 600)\nand on (instance, job) (min_over_time(obmux_connection_up{role=\"upstream\"}[10m]) == 1)\n" +
			"and on (instance, job) (time() - process_start_time_seconds > 600)",
			`obmux_upstream_last_event_timestamp_seconds obmux_connection_up{role="upstream"} process_start_time_seconds`},
		{`sum(x) without (a) / on (b) group_left (c) y offset 5m`, `x y`},
		{`max(go_goroutines{instance=~"$instance"} and on (instance, job) obmux_build_info) or vector(0)`,
			`go_goroutines{instance=~"$instance"} obmux_build_info`},
		{`time() - max(obmux_upstream_last_event_timestamp_seconds{instance=~"${instance}"} > 1e9)`,
			`obmux_upstream_last_event_timestamp_seconds{instance=~"${instance}"}`},
		{`rate(a{k!~'x|y', l!="z"}[1m:10s])`, `a{k!~"x|y",l!="z"}`},
	} {
		sels, err := promqlSelectors(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		var got []string
		for _, s := range sels {
			var ms []string
			for _, m := range s.matchers {
				ms = append(ms, fmt.Sprintf("%s%s%q", m.label, m.op, m.value))
			}
			if len(ms) > 0 {
				got = append(got, s.metric+"{"+strings.Join(ms, ",")+"}")
			} else {
				got = append(got, s.metric)
			}
		}
		if g := strings.Join(got, " "); g != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.expr, g, c.want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `x{a="b"`, `x{a}`, `x{a="b}`} {
		if _, err := promqlSelectors(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if v := yamlValues("a:\n  - expr: 'x{a=''b''}'\n    expr: \"y\"\n  expr: >-\n    z\n    + w\n  k: 1\n", "expr"); len(v) != 3 ||
		v[0].expr != `x{a='b'}` || v[1].expr != "y" || v[2].expr != "z\n+ w" {
		t.Errorf("yamlValues: %q", v)
	}
}
