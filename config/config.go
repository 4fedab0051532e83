// Package config reads obmux's configuration from OBMUX_* environment
// variables once, validates it whole (every problem reported in one Error)
// and hands it down as typed values; nothing below cmd reads the environment.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"golang.org/x/time/rate"

	"github.com/obmux/obmux/fanout"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/policy"
	"github.com/obmux/obmux/proxy"
	"github.com/obmux/obmux/wsconn"
)

// Prefix starts every variable obmux reads.
const Prefix = "OBMUX_"

// Config is obmux's whole configuration, read once from the environment.
// The env tags are the variable names without OBMUX_.
type Config struct {
	UpstreamURL    string        `env:"UPSTREAM_URL"`
	UpstreamListen string        `env:"UPSTREAM_LISTEN" envDefault:":8080"`
	UpstreamPath   string        `env:"UPSTREAM_PATH" envDefault:"/onebot/v11/ws"`
	UpstreamToken  string        `env:"UPSTREAM_TOKEN"`
	SelfID         int64         `env:"SELF_ID"`
	APITimeout     time.Duration `env:"API_TIMEOUT" envDefault:"30s"`
	APIMaxInflight int           `env:"API_MAX_INFLIGHT" envDefault:"100"`
	// APIMaxInflightBytes bounds one caller's calls in flight in bytes.
	APIMaxInflightBytes int64         `env:"API_MAX_INFLIGHT_BYTES" envDefault:"16777216"`
	QueueSize           int           `env:"QUEUE_SIZE" envDefault:"1024"`
	QueueBytes          int64         `env:"QUEUE_BYTES" envDefault:"67108864"`
	SlowTarget          string        `env:"SLOW_TARGET" envDefault:"disconnect"`
	WriteTimeout        time.Duration `env:"WRITE_TIMEOUT" envDefault:"10s"`
	MaxMessageBytes     int64         `env:"MAX_MESSAGE_BYTES" envDefault:"16777216"`
	LogLevel            string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat           string        `env:"LOG_FORMAT" envDefault:"auto"`

	HeartbeatInterval time.Duration `env:"HEARTBEAT_INTERVAL" envDefault:"5s"`
	PingInterval      time.Duration `env:"PING_INTERVAL" envDefault:"20s"`
	PingTimeout       time.Duration `env:"PING_TIMEOUT" envDefault:"20s"`
	ReconnectMin      time.Duration `env:"RECONNECT_MIN" envDefault:"1s"`
	ReconnectMax      time.Duration `env:"RECONNECT_MAX" envDefault:"30s"`
	ShutdownTimeout   time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	MetricsListen     string        `env:"METRICS_LISTEN" envDefault:":9108"`
	// HTTPTimeout bounds reading one HTTP request (headers and body) on
	// obmux's listeners; WebSockets, once upgraded, are not affected.
	HTTPTimeout time.Duration `env:"HTTP_TIMEOUT" envDefault:"10s"`
	// AllowedHosts are host names under which a browser page may reach the
	// WebSocket servers (besides loopback and IP addresses).
	AllowedHosts []string `env:"ALLOWED_HOSTS" envSeparator:","`

	NotifyURL   string        `env:"NOTIFY_URL"`
	NotifyAfter time.Duration `env:"NOTIFY_AFTER" envDefault:"1m"`

	ForwardListen       string `env:"FORWARD_LISTEN"`
	ForwardToken        string `env:"FORWARD_TOKEN"`
	ForwardAPIHeartbeat bool   `env:"FORWARD_API_HEARTBEAT" envDefault:"true"`
	ForwardMaxClients   int    `env:"FORWARD_MAX_CLIENTS" envDefault:"100"`

	// SendRate is the account-wide rate of sends ("1/s", "20/m"; empty:
	// no limit); with SendBurst and SendActions it is read into Send.
	SendRate    string `env:"SEND_RATE"`
	SendBurst   int    `env:"SEND_BURST" envDefault:"1"`
	SendActions string `env:"SEND_ACTIONS" envDefault:"send_msg,send_group_msg,send_private_msg,send_group_forward_msg,send_private_forward_msg,send_forward_msg"`
	// Send is the send rate limit, from SendRate, SendBurst and
	// SendActions (Rate 0: off).
	Send proxy.SendLimit `env:"-"`

	ReplaySize   int           `env:"REPLAY_SIZE" envDefault:"10000"`
	ReplayBytes  int64         `env:"REPLAY_BYTES" envDefault:"67108864"`
	ReplayMaxAge time.Duration `env:"REPLAY_MAX_AGE" envDefault:"5m"`

	// NATS JetStream as the event backbone (empty URL: off); see nats.go.
	NATSURL         string        `env:"NATS_URL"`
	NATSCreds       string        `env:"NATS_CREDS"`
	NATSToken       string        `env:"NATS_TOKEN"`
	NATSStream      string        `env:"NATS_STREAM" envDefault:"ONEBOT"`
	NATSMaxAge      time.Duration `env:"NATS_MAX_AGE" envDefault:"24h"`
	NATSMaxBytes    int64         `env:"NATS_MAX_BYTES" envDefault:"1073741824"`
	NATSBufferBytes int64         `env:"NATS_BUFFER_BYTES" envDefault:"67108864"`
	// NATSConsumer names an edge's durable consumer; empty: derived from
	// the host name.
	NATSConsumer string `env:"NATS_CONSUMER"`
	// NATSCallers is the policy of the API calls made over NATS, from
	// OBMUX_NATS_API_ALLOW and OBMUX_NATS_API_DENY.
	NATSCallers policy.Policy `env:"-"`
	// NATSNamed is the policy of each named NATS caller (header
	// Obmux-Caller), from OBMUX_NATS_CALLER_<NAME>_API_ALLOW/_API_DENY, by
	// natsbus.CallerKey of the name; a caller not named here gets
	// NATSCallers.
	NATSNamed map[string]policy.Policy `env:"-"`

	// Targets come from OBMUX_TARGET_<NAME>_<SUFFIX> (URL, TOKEN and the
	// rows of policy.Vars), sorted by name.
	Targets []fanout.TargetConfig `env:"-"`
	// Forward is the policy of every forward-WS client, from
	// OBMUX_FORWARD_<SUFFIX> (the rows of policy.Vars that apply to them).
	Forward policy.Policy `env:"-"`
}

// Error is every problem found in the configuration, reported at once.
type Error struct{ problems []string }

func (e *Error) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.problems, "\n  ")
}

// targetSuffixes are what may follow OBMUX_TARGET_<NAME>_: the target's own
// URL and TOKEN, then its policy's variables.
var targetSuffixes = append([]string{"URL", "TOKEN"}, policy.Suffixes(false)...)

// targetVar splits OBMUX_TARGET_<NAME>_<SUFFIX>; the shortest name wins, so
// that a suffix holding _ (GROUPS_DENY) is never read as part of the name.
var targetVar = regexp.MustCompile(`^OBMUX_TARGET_(.+?)_(` + strings.Join(targetSuffixes, "|") + `)$`)

// forwardVar matches the policy variables of forward-WS clients.
var forwardVar = regexp.MustCompile(`^OBMUX_FORWARD_(` + strings.Join(policy.Suffixes(true), "|") + `)$`)
var targetName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// serviceLink matches what Kubernetes (a Service named obmux) and Docker
// links put into the environment: not ours, not an error.
var serviceLink = regexp.MustCompile(`^OBMUX_(SERVICE_HOST|SERVICE_PORT(_.*)?|PORT(_.*)?)$`)

// Load reads and validates the configuration from environ
// ("KEY=value" strings). Every problem is named in one *Error.
func Load(environ []string) (Config, error) {
	vars := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(strings.ToUpper(k), Prefix) {
			vars[k] = v
		}
	}
	var cfg Config
	var unreadable []string // problems of values env could not parse
	if err := env.ParseWithOptions(&cfg, env.Options{Prefix: Prefix, Environment: vars}); err != nil {
		unreadable = parseProblems(err, vars)
	}
	problems := append(unreadable, parseNamed(&cfg, vars)...)
	problems = append(problems, validate(&cfg, unreadable)...)
	if len(problems) > 0 {
		sort.Strings(problems)
		return cfg, &Error{problems}
	}
	return cfg, nil
}

// parseNamed reads the variables that env does not: the targets
// (OBMUX_TARGET_<NAME>_<SUFFIX>, sorted by name into cfg.Targets) and the
// forward clients' policy (OBMUX_FORWARD_<SUFFIX>), and names every other
// OBMUX_ variable obmux does not read. It returns the problems found.
func parseNamed(cfg *Config, vars map[string]string) []string {
	var problems []string
	known := Known()
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys) // stable messages
	ts := newTargetSet()
	for _, k := range keys {
		v := vars[k]
		if m := forwardVar.FindStringSubmatch(k); m != nil {
			row, _ := policy.Lookup(m[1])
			if err := row.Set(&cfg.Forward, v); err != nil {
				problems = append(problems, policy.Problem(k, v, err))
			}
			continue
		}
		if m := natsCallerVar.FindStringSubmatch(k); m != nil {
			if p := setNATSCaller(cfg, k, m[1], m[2], v); p != "" {
				problems = append(problems, p)
			}
			continue
		}
		if m := natsVar.FindStringSubmatch(k); m != nil {
			row, _ := policy.Lookup(m[1])
			if err := row.Set(&cfg.NATSCallers, v); err != nil {
				problems = append(problems, policy.Problem(k, v, err))
			}
			continue
		}
		m := targetVar.FindStringSubmatch(k)
		switch {
		case m != nil:
			if p := ts.set(k, m[1], m[2], v); p != "" {
				problems = append(problems, p)
			}
		case !known[k] && !serviceLink.MatchString(k):
			problems = append(problems, unknownVar(k))
		}
	}
	targets, more := ts.finish()
	cfg.Targets = targets
	return append(problems, more...)
}

// targetSet collects the targets' variables, one target per name.
type targetSet struct {
	byName   map[string]*fanout.TargetConfig
	urlSet   map[string]bool   // its URL variable is set (maybe empty)
	spelling map[string]bool   // two spellings of its name were seen
	setBy    map[string]string // its first variable, for hints
}

func newTargetSet() *targetSet {
	return &targetSet{byName: map[string]*fanout.TargetConfig{}, urlSet: map[string]bool{},
		spelling: map[string]bool{}, setBy: map[string]string{}}
}

// set reads variable k (OBMUX_TARGET_<raw>_<suffix>) with value v and returns
// its problem, if any.
func (ts *targetSet) set(k, raw, suffix, v string) string {
	if !targetName.MatchString(raw) || strings.Trim(raw, "_") == "" {
		return fmt.Sprintf("%s: the target name %q may hold only letters, digits and _ (and not only _)", k, raw)
	}
	name := strings.ToLower(raw)
	t := ts.byName[name]
	if t == nil {
		t = &fanout.TargetConfig{Name: name, EnvPrefix: "OBMUX_TARGET_" + raw}
		ts.byName[name] = t
	} else if t.EnvPrefix != "OBMUX_TARGET_"+raw {
		ts.spelling[name] = true
		return fmt.Sprintf("%s and %s_*: two spellings of target %q (names are not case-sensitive): use one", k, t.EnvPrefix, name)
	}
	if ts.setBy[name] == "" {
		ts.setBy[name] = k
	}
	switch suffix {
	case "URL":
		t.URL, ts.urlSet[name] = v, true
	case "TOKEN":
		t.Token = v
	default:
		row, _ := policy.Lookup(suffix)
		if err := row.Set(&t.Policy, v); err != nil {
			return policy.Problem(k, v, err)
		}
	}
	return ""
}

// finish returns the usable targets, sorted by name, and the problems of
// the others (no URL, or a bad one).
func (ts *targetSet) finish() ([]fanout.TargetConfig, []string) {
	var targets []fanout.TargetConfig
	var problems []string
	for _, t := range ts.byName {
		switch {
		case ts.spelling[t.Name]:
			continue
		case t.URL == "" && ts.urlSet[t.Name]:
			problems = append(problems, fmt.Sprintf("%s_URL: empty: set the framework's reverse-WS URL, such as ws://nonebot:8080/onebot/v11/ws", t.EnvPrefix))
			continue
		case t.URL == "":
			problems = append(problems, fmt.Sprintf("%s_URL: not set, but %s is", t.EnvPrefix, ts.setBy[t.Name]))
			continue
		}
		if p := checkWSURL(t.URL); p != "" {
			problems = append(problems, fmt.Sprintf("%s_URL=%q: %s", t.EnvPrefix, wsconn.RedactURL(t.URL), p))
		}
		targets = append(targets, *t)
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].Name < targets[j].Name })
	return targets, problems
}

// validate checks the values env read into cfg and returns the problems
// found; a variable with a problem in unreadable (its value could not be
// read) is not reported again.
func validate(cfg *Config, unreadable []string) []string {
	var problems []string
	bad := func(name string, value any, why string) {
		for _, p := range unreadable {
			if strings.HasPrefix(p, Prefix+name+"=") {
				return // its value could not be read: one problem is enough
			}
		}
		problems = append(problems, fmt.Sprintf("%s%s=%v: %s", Prefix, name, value, why))
	}
	validateAddresses(cfg, bad)
	validateDurations(cfg, bad)
	validateBounds(cfg, bad)
	validateSend(cfg, bad)
	validateChoices(cfg, bad)
	validateNATS(cfg, bad)
	return problems
}

// badFunc reports that variable name (without OBMUX_) has value, and why
// that is wrong.
type badFunc func(name string, value any, why string)

// validateAddresses checks the URLs and listen addresses.
func validateAddresses(cfg *Config, bad badFunc) {
	if cfg.Edge() {
		// validateNATS checks an edge's upstream.
	} else if cfg.UpstreamURL != "" {
		if p := checkWSURL(cfg.UpstreamURL); p != "" {
			bad("UPSTREAM_URL", strconv.Quote(wsconn.RedactURL(cfg.UpstreamURL)), p)
		}
	} else {
		if p := checkAddr(cfg.UpstreamListen); p != "" {
			bad("UPSTREAM_LISTEN", cfg.UpstreamListen, p)
		}
		if !strings.HasPrefix(cfg.UpstreamPath, "/") || strings.ContainsAny(cfg.UpstreamPath, " \t{}?#") {
			bad("UPSTREAM_PATH", strconv.Quote(cfg.UpstreamPath), "must be a URL path starting with / (no spaces, {}, ? or #)")
		}
	}
	if p := checkAddr(cfg.MetricsListen); p != "" {
		bad("METRICS_LISTEN", cfg.MetricsListen, p)
	}
	if cfg.ForwardListen != "" {
		if p := checkAddr(cfg.ForwardListen); p != "" {
			bad("FORWARD_LISTEN", cfg.ForwardListen, p)
		}
	}
	if cfg.NotifyURL != "" {
		if p := checkHTTPURL(cfg.NotifyURL); p != "" {
			bad("NOTIFY_URL", strconv.Quote(wsconn.RedactURL(cfg.NotifyURL)), p)
		}
	}
	for _, h := range cfg.AllowedHosts {
		if !hostName.MatchString(strings.TrimSpace(h)) {
			bad("ALLOWED_HOSTS", strconv.Quote(strings.Join(cfg.AllowedHosts, ",")),
				"must be host names separated by commas, without scheme, port or path, such as bot.example.com,obmux.lan")
			break
		}
	}
	for i := range cfg.AllowedHosts {
		cfg.AllowedHosts[i] = strings.TrimSpace(cfg.AllowedHosts[i])
	}
}

// validateDurations checks the timeouts and intervals.
func validateDurations(cfg *Config, bad badFunc) {
	if cfg.NotifyAfter < 0 {
		bad("NOTIFY_AFTER", cfg.NotifyAfter, "must be 0 (at once) or a positive duration such as 30s or 5m")
	}
	positive := []struct {
		name string
		d    time.Duration
	}{{"API_TIMEOUT", cfg.APITimeout}, {"PING_TIMEOUT", cfg.PingTimeout}, {"RECONNECT_MIN", cfg.ReconnectMin},
		{"RECONNECT_MAX", cfg.ReconnectMax}, {"SHUTDOWN_TIMEOUT", cfg.ShutdownTimeout}, {"REPLAY_MAX_AGE", cfg.ReplayMaxAge},
		{"HTTP_TIMEOUT", cfg.HTTPTimeout}}
	for _, p := range positive {
		if p.d <= 0 {
			bad(p.name, p.d, "must be a positive duration such as 500ms or 30s")
		}
	}
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"HEARTBEAT_INTERVAL", cfg.HeartbeatInterval}, {"PING_INTERVAL", cfg.PingInterval}, {"WRITE_TIMEOUT", cfg.WriteTimeout}} {
		if p.d < 0 || (p.d > 0 && p.d < 10*time.Millisecond) {
			bad(p.name, p.d, "must be 0 (off) or at least 10ms")
		}
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		bad("RECONNECT_MAX", cfg.ReconnectMax, "must not be less than OBMUX_RECONNECT_MIN ("+cfg.ReconnectMin.String()+")")
	}
}

// validateBounds checks the numbers: the self_id, sizes and counts.
func validateBounds(cfg *Config, bad badFunc) {
	if cfg.SelfID < 0 {
		bad("SELF_ID", cfg.SelfID, "must be a QQ number (positive)")
	}
	// The ring that holds queued and replayable events is allocated up
	// front (40 bytes an entry): keep it sane.
	if cfg.QueueSize < 1 || cfg.QueueSize > 1_000_000 {
		bad("QUEUE_SIZE", cfg.QueueSize, "must be from 1 to 1000000")
	}
	for _, p := range []struct {
		name string
		n    int64
	}{{"API_MAX_INFLIGHT", int64(cfg.APIMaxInflight)}, {"API_MAX_INFLIGHT_BYTES", cfg.APIMaxInflightBytes},
		{"FORWARD_MAX_CLIENTS", int64(cfg.ForwardMaxClients)}, {"QUEUE_BYTES", cfg.QueueBytes}} {
		if p.n < 1 {
			bad(p.name, p.n, "must be at least 1")
		}
	}
	if cfg.ReplaySize < 0 || cfg.ReplaySize > 10_000_000 {
		bad("REPLAY_SIZE", cfg.ReplaySize, "must be from 0 (no replay) to 10000000")
	}
	if cfg.ReplayBytes < 0 {
		bad("REPLAY_BYTES", cfg.ReplayBytes, "must be 0 (no replay) or more")
	}
	if cfg.MaxMessageBytes < 1024 {
		bad("MAX_MESSAGE_BYTES", cfg.MaxMessageBytes, "must be at least 1024")
	}
}

// validateSend checks the send rate limit and reads it into cfg.Send.
func validateSend(cfg *Config, bad badFunc) {
	if cfg.SendRate != "" {
		if r, err := parseRate(cfg.SendRate); err != nil {
			bad("SEND_RATE", strconv.Quote(cfg.SendRate), err.Error())
		} else {
			cfg.Send = proxy.SendLimit{Rate: r, Burst: cfg.SendBurst, Spec: cfg.SendRate}
		}
	}
	if cfg.SendBurst < 1 || cfg.SendBurst > 1000 {
		bad("SEND_BURST", cfg.SendBurst, "must be from 1 to 1000: how many sends may go at once after a quiet spell")
	}
	var actionProblems []string
	for a := range strings.SplitSeq(cfg.SendActions, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if err := onebot.CheckAction(a, false); err != nil {
			actionProblems = append(actionProblems, err.Error())
		} else {
			cfg.Send.Actions = append(cfg.Send.Actions, a)
		}
	}
	if len(actionProblems) == 0 && len(cfg.Send.Actions) == 0 {
		actionProblems = append(actionProblems, "names no action (leave it empty for the message-sending ones)")
	}
	if len(actionProblems) > 0 {
		bad("SEND_ACTIONS", strconv.Quote(cfg.SendActions), strings.Join(actionProblems, "; "))
	}
}

// validateChoices checks the variables that take one of a few words.
func validateChoices(cfg *Config, bad badFunc) {
	switch fanout.SlowPolicy(cfg.SlowTarget) {
	case fanout.SlowDisconnect, fanout.SlowDropOldest:
	default:
		bad("SLOW_TARGET", cfg.SlowTarget, "must be disconnect or drop_oldest")
	}
	switch cfg.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", cfg.LogLevel, "must be debug, info, warn or error")
	}
	switch cfg.LogFormat {
	case "auto", "text", "json":
	default:
		bad("LOG_FORMAT", cfg.LogFormat, "must be auto, text or json")
	}
}

// unknownVar is the problem of a variable obmux does not read.
func unknownVar(k string) string {
	if s := Suggest(k); s != "" {
		return fmt.Sprintf("%s: not an obmux variable: did you mean %s?", k, s)
	}
	return fmt.Sprintf("%s: not an obmux variable (misspelt? see the README's table; targets are %sTARGET_<NAME>_ and one of %s)",
		k, Prefix, strings.Join(targetSuffixes, ", "))
}

// parseProblems turns env's errors into "OBMUX_X=value: why" lines.
func parseProblems(err error, vars map[string]string) []string {
	var agg env.AggregateError
	errs := []error{err}
	if errors.As(err, &agg) {
		errs = agg.Errors
	}
	var out []string
	for _, e := range errs {
		var pe env.ParseError
		if errors.As(e, &pe) {
			name := Prefix + fieldTag(pe.Name)
			why := pe.Err.Error()
			switch pe.Type.Kind() {
			case reflect.Int, reflect.Int64:
				if pe.Type == reflect.TypeOf(time.Duration(0)) {
					why = "not a duration (use Go syntax: 500ms, 30s, 5m)"
				} else {
					why = "not a whole number"
				}
			case reflect.Bool:
				why = "not a boolean (true or false)"
			}
			out = append(out, fmt.Sprintf("%s=%q: %s", name, vars[name], why))
			continue
		}
		out = append(out, e.Error())
	}
	return out
}

// CheckName reports what is wrong with the name of an OBMUX_* variable, or
// "" when obmux reads it.
func CheckName(name string) string {
	if Known()[name] {
		return ""
	}
	if m := targetVar.FindStringSubmatch(name); m != nil {
		if !targetName.MatchString(m[1]) {
			return "the target name may hold only letters, digits and _"
		}
		return ""
	}
	if m := natsCallerVar.FindStringSubmatch(name); m != nil && targetName.MatchString(m[1]) {
		return ""
	}
	return "obmux reads no such variable (see config/config.go, or OBMUX_TARGET_<NAME>_ and one of " + strings.Join(targetSuffixes, ", ") + ")"
}

// Known returns the names of every variable of config but the targets'
// (OBMUX_TARGET_<NAME>_*): the fields of Config and OBMUX_FORWARD_<SUFFIX>.
func Known() map[string]bool {
	known := map[string]bool{}
	for _, s := range policy.Suffixes(true) {
		known[Prefix+"FORWARD_"+s] = true
	}
	for _, s := range natsSuffixes {
		known[Prefix+"NATS_"+s] = true
	}
	ct := reflect.TypeOf(Config{})
	for i := range ct.NumField() {
		if tag, _, _ := strings.Cut(ct.Field(i).Tag.Get("env"), ","); tag != "" && tag != "-" {
			known[Prefix+tag] = true
		}
	}
	return known
}

// fieldTag returns the env tag of config's field named field.
func fieldTag(field string) string {
	f, ok := reflect.TypeOf(Config{}).FieldByName(field)
	if !ok {
		return field
	}
	tag, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return tag
}

// hostName is a DNS name (labels of letters, digits, - and _).
var hostName = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$`)

// quoted is a quoted part of a URL in url.Parse's error.
var quoted = regexp.MustCompile(`"[^"]*"`)

func checkWSURL(s string) string { return checkURL(s, "must be a ws:// or wss:// URL", "ws", "wss") }

func checkHTTPURL(s string) string {
	return checkURL(s, "must be an http:// or https:// URL", "http", "https")
}

// checkURL says what is wrong with s as a URL with one of two schemes
// (wrongScheme when it has neither). url.Parse's error quotes the URL and
// parts of it (a malformed password may be one): only its reason is kept,
// with what it quotes hidden; the caller shows the URL redacted.
func checkURL(s, wrongScheme, scheme, secure string) string {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "not a URL: " + quoted.ReplaceAllString(err.Error(), `"`+wsconn.Redacted+`"`)
	}
	if u.Scheme != scheme && u.Scheme != secure {
		return wrongScheme
	}
	if u.Host == "" {
		return "has no host"
	}
	return ""
}

// sendRate is a rate as OBMUX_SEND_RATE gives it: a positive number of
// sends per second, minute or hour.
var sendRate = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(s|m|h)\s*$`)

// parseRate parses OBMUX_SEND_RATE into sends a second.
// maxSendRate bounds OBMUX_SEND_RATE: more sends a second than any account
// may make is a typo, and a number too long for a float64 would be +Inf.
const maxSendRate = 1_000_000

func parseRate(s string) (rate.Limit, error) {
	m := sendRate.FindStringSubmatch(s)
	if m == nil {
		return 0, errors.New("not a rate: give sends per second, minute or hour, such as 1/s, 20/m or 300/h (empty: no limit)")
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err == nil && n <= 0 {
		return 0, errors.New("must be more than 0 (leave it empty for no limit)")
	}
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[m[2]]
	if err != nil || n/per > maxSendRate {
		return 0, fmt.Errorf("must be at most %d/s (leave it empty for no limit)", maxSendRate)
	}
	return rate.Limit(n / per), nil
}

func checkAddr(s string) string {
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "not a host:port listen address (such as :8080): " + err.Error()
	}
	return ""
}
