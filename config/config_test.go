package config

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Per-bot variables: a suffix with _ is not read as part of the name, the
// forward clients have theirs, and every problem is named at once.
func TestPolicyVariables(t *testing.T) {
	cfg, err := Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_REPLAY_MAX_AGE=10s",
		"OBMUX_TARGET_MY_REPLAY_URL=ws://b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Targets) != 2 || cfg.Targets[0].Name != "a" || cfg.Targets[1].Name != "my_replay" {
		t.Fatalf("targets %+v", cfg.Targets)
	}
	if d := cfg.Targets[0].Policy.ReplayMaxAge; d == nil || *d != 10*time.Second {
		t.Errorf("REPLAY_MAX_AGE not read: %v", d)
	}
	if d := cfg.Targets[1].Policy.ReplayMaxAge; d != nil {
		t.Errorf("a target without REPLAY_MAX_AGE got %v (want the global default)", *d)
	}

	_, err = Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_REPLAY_MAX_AGE=soon",
		"OBMUX_TARGET_B_REPLAY_MAX_AGE=1s", "OBMUX_FORWARD_REPLAY_MAX_AGE=1s", "OBMUX_TARGET_C_URL=ws://c", "OBMUX_TARGET_C_REPLAY_MAXAGE=1s"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`OBMUX_TARGET_A_REPLAY_MAX_AGE="soon": not a duration`,
		"OBMUX_TARGET_B_URL: not set, but OBMUX_TARGET_B_REPLAY_MAX_AGE is",
		"OBMUX_FORWARD_REPLAY_MAX_AGE: not an obmux variable",
		"OBMUX_TARGET_C_REPLAY_MAXAGE: not an obmux variable",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	// Filters: every problem at once, each naming its variable (and, for
	// the filter language, the position).
	_, err = Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_GROUPS=1,x", "OBMUX_TARGET_A_GROUPS_DENY=0",
		`OBMUX_TARGET_A_FILTER={"raw_message":{".regex":"("}}`, "OBMUX_TARGET_A_SELF_MESSAGES=nah",
		`OBMUX_FORWARD_FILTER={".nope":{}}`, "OBMUX_FORWARD_USERS_DENY=q", "OBMUX_TARGET_A_FILTER_FILE=/nonexistent",
		"OBMUX_TARGET_A_MESSAGE_FORMAT=cq", "OBMUX_FORWARD_MESSAGE_FORMAT=Array"})
	for _, want := range []string{
		`OBMUX_TARGET_A_GROUPS="1,x": "x" is not a group number`,
		`OBMUX_TARGET_A_GROUPS_DENY="0"`,
		`OBMUX_TARGET_A_FILTER="{\"raw_message\":{\".regex\":\"(\"}}": the filter does not parse: line 1, column 26`,
		`OBMUX_TARGET_A_SELF_MESSAGES="nah": not a boolean`,
		`OBMUX_FORWARD_FILTER="{\".nope\":{}}": the filter does not parse: line 1, column 2 (byte 1): unknown operator .nope`,
		`OBMUX_FORWARD_USERS_DENY="q"`,
		`OBMUX_TARGET_A_FILTER_FILE="/nonexistent": `,
		`OBMUX_TARGET_A_MESSAGE_FORMAT="cq": not a message format (array or string`,
		`OBMUX_FORWARD_MESSAGE_FORMAT="Array": not a message format`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	// Message formats are read for targets and forward clients.
	cfg, err = Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_MESSAGE_FORMAT=string", "OBMUX_TARGET_B_URL=ws://b",
		"OBMUX_FORWARD_MESSAGE_FORMAT=array"})
	if err != nil || cfg.Targets[0].Policy.MessageFormat != "string" || cfg.Targets[1].Policy.MessageFormat != "" ||
		cfg.Forward.MessageFormat != "array" {
		t.Errorf("MESSAGE_FORMAT not read: %v", err)
	}
	// API permissions: every bad pattern named at once, the API_ suffixes
	// read for targets (even a target named API) and forward clients.
	cfg, err = Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_API_ALLOW=get_*,can_*",
		"OBMUX_TARGET_API_URL=ws://b", "OBMUX_TARGET_API_API_DENY=set_group_kick", "OBMUX_FORWARD_API_DENY=send_*"})
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Targets[0].Policy.API.Allow; len(a) != 2 || a[1] != "can_*" {
		t.Errorf("OBMUX_TARGET_A_API_ALLOW read as %q", a)
	}
	if d := cfg.Targets[1].Policy.API.Deny; cfg.Targets[1].Name != "api" || len(d) != 1 || d[0] != "set_group_kick" {
		t.Errorf("OBMUX_TARGET_API_API_DENY read as %s %q", cfg.Targets[1].Name, d)
	}
	if d := cfg.Forward.API.Deny; len(d) != 1 || d[0] != "send_*" {
		t.Errorf("OBMUX_FORWARD_API_DENY read as %q", d)
	}
	_, err = Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_API_ALLOW=get_* can_*", "OBMUX_TARGET_A_API_DENY=send_msg_async",
		"OBMUX_FORWARD_API_ALLOW=get/status", "OBMUX_FORWARD_API_DENY=*_rate_limited", "OBMUX_TARGET_A_API_ALOW=get_*"})
	for _, want := range []string{
		`OBMUX_TARGET_A_API_ALLOW="get_* can_*": "get_* can_*" is not an action name or pattern`,
		`OBMUX_TARGET_A_API_DENY="send_msg_async": "send_msg_async": the _async suffix is stripped`,
		`OBMUX_FORWARD_API_ALLOW="get/status": "get/status" is not an action name`,
		`OBMUX_FORWARD_API_DENY="*_rate_limited": "*_rate_limited": the _rate_limited suffix is stripped`,
		`OBMUX_TARGET_A_API_ALOW: not an obmux variable`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if why := CheckName("OBMUX_TARGET_X_REPLAY_MAX_AGE"); why != "" {
		t.Errorf("CheckName refuses a policy variable: %s", why)
	}
}

// Known holds only names obmux reads: not the "-" of fields that come from
// elsewhere (Targets, Forward).
func TestKnownHasNoPlaceholder(t *testing.T) {
	if Known()["OBMUX_-"] {
		t.Error(`Known() has "OBMUX_-" (the env:"-" tag of a field)`)
	}
	if why := CheckName("OBMUX_-"); why == "" {
		t.Error(`CheckName accepts "OBMUX_-"`)
	}
}

// OBMUX_SEND_RATE, _BURST and _ACTIONS: read into one SendLimit, every bad
// value named at once.
func TestSendRateVariables(t *testing.T) {
	cfg, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Send.Rate != 0 {
		t.Errorf("rate limit on by default: %v", cfg.Send.Rate)
	}
	for _, c := range []struct {
		rate  string
		perS  float64
		burst string
	}{{"1/s", 1, ""}, {"20/m", 20.0 / 60, "5"}, {" 0.5 / s ", 0.5, "1"}, {"300/h", 300.0 / 3600, "1000"}} {
		env := []string{"OBMUX_SEND_RATE=" + c.rate, "OBMUX_SEND_ACTIONS=send_msg, send_group_msg"}
		if c.burst != "" {
			env = append(env, "OBMUX_SEND_BURST="+c.burst)
		}
		cfg, err := Load(env)
		if err != nil {
			t.Fatalf("%s: %v", c.rate, err)
		}
		if d := float64(cfg.Send.Rate) - c.perS; d > 1e-12 || d < -1e-12 || cfg.Send.Spec != c.rate {
			t.Errorf("%s read as %v/s (%q)", c.rate, cfg.Send.Rate, cfg.Send.Spec)
		}
		want := c.burst
		if want == "" {
			want = "1"
		}
		if strconv.Itoa(cfg.Send.Burst) != want {
			t.Errorf("OBMUX_SEND_BURST=%q read as %d", c.burst, cfg.Send.Burst)
		}
		if a := cfg.Send.Actions; len(a) != 2 || a[1] != "send_group_msg" {
			t.Errorf("actions %q", a)
		}
	}
	cfg, _ = Load([]string{"OBMUX_SEND_RATE=1/s"})
	if want := "send_msg send_group_msg send_private_msg send_group_forward_msg send_private_forward_msg send_forward_msg"; strings.Join(cfg.Send.Actions, " ") != want {
		t.Errorf("default actions %q", cfg.Send.Actions)
	}
	for _, c := range []struct{ env, want string }{
		{"OBMUX_SEND_RATE=1", `OBMUX_SEND_RATE="1": not a rate: give sends per second, minute or hour, such as 1/s, 20/m or 300/h (empty: no limit)`},
		{"OBMUX_SEND_RATE=1/d", `OBMUX_SEND_RATE="1/d": not a rate`},
		{"OBMUX_SEND_RATE=-1/s", `OBMUX_SEND_RATE="-1/s": not a rate`},
		{"OBMUX_SEND_RATE=0/s", `OBMUX_SEND_RATE="0/s": must be more than 0 (leave it empty for no limit)`},
		{"OBMUX_SEND_RATE=1/1s", `OBMUX_SEND_RATE="1/1s": not a rate`},
		{"OBMUX_SEND_BURST=0", `OBMUX_SEND_BURST=0: must be from 1 to 1000`},
		{"OBMUX_SEND_BURST=lots", `OBMUX_SEND_BURST="lots": not a whole number`},
		{"OBMUX_SEND_ACTIONS=send_msg,send_*", `OBMUX_SEND_ACTIONS="send_msg,send_*": "send_*" is not an action name (letters, digits, _ . -, comma-separated: send_msg,send_group_msg)`},
		{"OBMUX_SEND_ACTIONS=send_msg_async", `the _async suffix is stripped`},
		{"OBMUX_SEND_ACTIONS= , ", `OBMUX_SEND_ACTIONS=" , ": names no action`},
	} {
		_, err := Load([]string{c.env})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.env, err, c.want)
		}
	}
	// All at once.
	_, err = Load([]string{"OBMUX_SEND_RATE=fast", "OBMUX_SEND_BURST=-3", "OBMUX_SEND_ACTIONS=a b"})
	if err == nil || strings.Count(err.Error(), "OBMUX_SEND_") != 3 {
		t.Errorf("want three problems: %v", err)
	}
}

// parseRate accepts only a positive, finite rate per second, minute or
// hour, and reads it as that many sends over that unit.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"1/s", "20/m", "0.5/h", " 3 / s ", "0/s", "1e3/s", "/s", "1/", "99999999999999999999999/s", "1.5.5/m",
		"2" + strings.Repeat("0", 320) + "/s", "1000001/s", "1000000/s"} { // +Inf, over the bound, at it
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRate(s)
		if err != nil {
			return
		}
		if !(r > 0) || math.IsInf(float64(r), 0) {
			t.Fatalf("%q: rate %v", s, r)
		}
		n, unit, _ := strings.Cut(strings.Join(strings.Fields(s), ""), "/")
		v, perr := strconv.ParseFloat(n, 64)
		per := map[string]float64{"s": 1, "m": 60, "h": 3600}[unit]
		if perr != nil || per == 0 || math.Abs(float64(r)-v/per) > 1e-9*v/per {
			t.Fatalf("%q read as %v/s", s, r)
		}
	})
}
